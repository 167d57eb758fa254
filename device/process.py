"""This process's age and scheduling class: what the daemon logs at start and asks of the kernel."""
from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)


def process_age() -> float:
    """Seconds since this process started (Linux: its start time in /proc, on the boot clock)."""
    try:
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


def set_realtime(priority: int) -> None:
    """SCHED_FIFO for this process, so a busy machine doesn't make notes late; fine to be refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        log.info("realtime scheduling at priority %d", priority)
    except (PermissionError, OSError, AttributeError) as e:
        log.warning("realtime priority %d refused (%s); playing with normal scheduling", priority, e)
