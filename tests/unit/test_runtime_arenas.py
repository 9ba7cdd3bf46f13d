"""``dflray.runtime.limit_malloc_arenas``: the driver's glibc malloc arenas are capped, its children's are not."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's (mallopt)")

# Sixteen threads alive at once, each holding blocks from malloc, then glibc's own count of its arenas
# (malloc_stats prints one "Arena N:" section per arena to stderr).
_THREADS = """
import ctypes, os, sys, threading
import dflray.runtime as rt
limited = rt.limit_malloc_arenas() if sys.argv[1] == "limit" else None
barrier, held = threading.Barrier(16), []
def work():
    barrier.wait()
    held.append([bytearray(50_000) for _ in range(20)])
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(limited, os.environ.get("MALLOC_ARENA_MAX"), flush=True)
ctypes.CDLL(None).malloc_stats()
"""


def _run(mode: str, env_value: str | None = None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if env_value is not None:
        env["MALLOC_ARENA_MAX"] = env_value
    p = subprocess.run([sys.executable, "-c", _THREADS, mode], capture_output=True, text=True, env=env, check=True)
    return p.stdout.strip(), len(re.findall(r"^Arena \d+:", p.stderr, re.M))


def test_threads_share_the_capped_arenas_and_started_processes_keep_the_default():
    out, arenas = _run("limit")
    assert out == "True None"  # capped here; no MALLOC_ARENA_MAX for the workers this process starts
    assert 1 <= arenas <= 2


def test_without_the_cap_the_same_threads_get_more_arenas():
    # the control: the check above can fail (glibc allows 8 arenas per core)
    out, arenas = _run("none")
    assert out == "None None"
    assert arenas > 2


def test_a_users_own_setting_is_kept():
    out, _ = _run("limit", env_value="4")
    assert out == "False 4"
