"""Shared entrypoint of the ``jobs/*.py`` scripts submitted with ``ray job submit``.

A submitted job's driver runs on the cluster with ``RAY_ADDRESS`` set by Ray's job supervisor, so
``ray.init()`` joins that cluster. Run by hand, a job script joins the cluster already running on this
machine (``address="auto"``) and fails with a clear message when there is none: it never starts a
private cluster beside a real one. The stage itself is the ``dflray`` CLI subcommand of the same name,
so the arguments, config overrides, ``--help`` and exit codes are the CLI's (0 done, 1 failed, 2 bad
argument).
"""

from __future__ import annotations

import os
import sys

# `--working-dir .` makes the job's cwd the project root; put it on the path for `import dflray`
# when dflray is not installed in the cluster's image.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def run(command: str, argv: list[str] | None = None) -> int:
    """Connects to the cluster and runs ``dflray COMMAND ARGV``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv) or "--print-config" in argv:
        from dflray.cli import main

        return _exit_code(main, [command, *argv])
    import ray

    address = os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, log_to_driver=True)
    except ConnectionError as e:
        print(f"jobs/{command}.py: no Ray cluster to join at {address!r} ({e}); submit with `ray job submit` "
              "or start one (cluster/local.sh)", file=sys.stderr)
        return 2
    from dflray.cli import main

    try:
        return _exit_code(main, [command, *argv])
    finally:
        ray.shutdown()


def _exit_code(main, argv: list[str]) -> int:
    try:
        return int(main(argv) or 0)
    except SystemExit as e:  # argparse errors and --help
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
