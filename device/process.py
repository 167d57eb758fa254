"""This process's age and scheduling class: what the daemon logs at start and asks of the kernel."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator

log = logging.getLogger(__name__)
REALTIME = (os.SCHED_FIFO, os.SCHED_RR)


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


@contextlib.contextmanager
def normal_priority() -> Iterator[None]:
    """Normal scheduling for a long piece of work in a realtime thread (loading a bundle on a
    restart from the page), the realtime class back afterwards. At SCHED_FIFO the work would
    starve the rest of a small Pi for seconds, and run into the unit's LimitRTTIME= (the kernel
    ends a realtime task that runs that long without sleeping)."""
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    except OSError:
        policy = os.SCHED_OTHER
    if policy not in REALTIME:
        yield
        return
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))   # lowering needs no permission
    try:
        yield
    finally:
        try:   # raising again is allowed up to RLIMIT_RTPRIO (the unit's LimitRTPRIO=)
            os.sched_setscheduler(0, policy, param)
        except OSError as e:
            log.warning("realtime priority %d not restored (%s); playing with normal scheduling",
                        param.sched_priority, e)
