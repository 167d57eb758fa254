"""What the player does on each signal it is sent.

SIGTERM and SIGINT (systemctl stop, Ctrl-C) end the take at the loop's next pass: every note
ended, the ports closed, exit 0. SIGABRT is systemd's: its watchdog's when the loop has hung, its
start timeout's when a load has (TimeoutStartFailureMode=abort); SIGXCPU is the kernel's past the
unit's LimitRTTIME. Those unwind from wherever the player is, so the ports still close with every
note ended, and exit 1, which systemd restarts, not a core dump.
"""
from __future__ import annotations

import logging
import signal
from typing import Any, Callable

log = logging.getLogger(__name__)


class WatchdogAbort(BaseException):
    """The play loop was interrupted by SIGABRT or SIGXCPU. Not an Exception: the handlers that
    keep a take going through a lost port or a failed control op must not catch it."""


def abort(signum: int, _frame: Any) -> None:
    raise WatchdogAbort(f"{signal.Signals(signum).name} (the watchdog or the realtime limit): "
                        "the play loop stopped answering")


def stop_loading(signum: int, _frame: Any) -> None:
    """While the take loads nothing is open yet: exit at once."""
    log.log(logging.ERROR if signum == signal.SIGABRT else logging.INFO, "%s while loading: stopping",
            signal.Signals(signum).name)
    raise SystemExit(1 if signum == signal.SIGABRT else 0)


def answer(stop: Callable[[int, Any], None]) -> None:
    """While playing: SIGTERM and SIGINT call `stop`; SIGABRT and SIGXCPU abort."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    for signum in (signal.SIGABRT, signal.SIGXCPU):
        signal.signal(signum, abort)
