"""What the whole machine spends: the benches' measure of CPU across processes.

A run touches several processes (services, zygotes, the runs they fork, the
kernel's work for namespaces), so the honest cost is the machine's busy time
over many runs on an otherwise idle machine, divided by the runs.
"""

from __future__ import annotations

import os


def machine_cpu_s() -> float:
    """CPU seconds the machine has spent busy since boot (not idle, not waiting for I/O)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
