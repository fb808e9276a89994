"""Keeping a service's memory from ratcheting up under bursts of large requests.

glibc raises its mmap threshold to the size of the largest block freed so far
(up to 32 MB). After one 8 MB request (the mesh's message limit), every later
large buffer (the request's bytes, its parsed message, a JSON string) is carved
out of a heap instead of mapped, and when freed it stays there, fragmented,
spread over up to eight arenas per core (one per thread that allocates). RSS
then climbs under hostile traffic and does not come back, although what Python
and gRPC hold stays flat (``bench/soak.py`` measures it). A fixed threshold
maps large blocks again, so they are returned when freed, and two arenas bound
the rest. Settings the environment gives (``MALLOC_ARENA_MAX``,
``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``) win; where the C library is not
glibc, nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["limit_retained_memory"]

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's own starting value; fixing it turns off the raising."""
ARENAS = 2


def limit_retained_memory() -> bool:
    """Apply the settings above to this process; whether glibc took them."""
    if platform.libc_ver()[0] != "glibc" or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        applied &= mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    if "MALLOC_ARENA_MAX" not in os.environ:
        applied &= mallopt(_M_ARENA_MAX, ARENAS) == 1
    return applied
