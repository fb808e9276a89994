"""A service's allocator settings: large buffers freed by many threads go back to the system."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Bursts of what hostile requests at the 8 MB message limit leave behind (the request's bytes,
# a copy, a string), freed at once, from 8 threads at a time as a server's threads do.
PROBE = """
import sys, threading
from mesh.host.allocator import limit_retained_memory

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) // 1024

if sys.argv[1] == "limited":
    assert limit_retained_memory()
before = rss_mb()
start = threading.Barrier(8)

def burst():
    start.wait()
    for n in range(8):
        blocks = [b"x" * (8_000_000 - n * 1000), bytes(2_000_000 + n), "y" * 1_000_000]
        del blocks

threads = [threading.Thread(target=burst) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(rss_mb() - before)
"""


def grown_mb(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         env=env, check=True).stdout  # fmt: skip
    return int(out)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_freed_large_buffers_do_not_stay_resident() -> None:
    assert grown_mb("default") > 40  # glibc's defaults: the ratchet (bench/soak.py, issue 18)
    assert grown_mb("limited") < 10
