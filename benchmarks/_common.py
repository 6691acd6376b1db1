"""What the benchmark scripts share: describing the machine and reading a process's peak RSS.

The scripts run as ``python benchmarks/bench_x.py``, which puts this folder first on ``sys.path``, so
they import this module as ``_common`` (benchmarks/ is not a package).
"""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def ram_gib() -> float:
    """Physical memory in GiB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB (one decimal) from /proc (VmHWM: since exec; ru_maxrss would include
    the parent's RSS at fork time), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
