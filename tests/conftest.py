"""Both tiers: the free disk space at the end of the run, printed in the summary (a nearly full disk
stalls Ray's object store and fails writes, so a failed or timed-out CI run should say how much was left)."""

import shutil
import tempfile


def pytest_terminal_summary(terminalreporter):
    for where in (tempfile.gettempdir(), "."):
        u = shutil.disk_usage(where)
        terminalreporter.write_line(f"disk at {where}: {u.free / 2**30:.1f} GiB free of {u.total / 2**30:.1f} GiB")
