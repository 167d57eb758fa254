"""When the play loop may generate, and how long a piece of generation takes.

Generation never makes a note or a sent clock tick late: a piece of work (one model step, or a
planned beat's next candidate) begins only while the next deadline is further away than twice the
slowest recent piece, unless the lookahead is about to run dry, and a planned call is told to
stop before the deadline less that slowest piece (then it yields and the loop sends what is due).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

MIN_STEP_BUDGET = 0.002   # seconds a piece is assumed to take at the least


class Pacer:
    def __init__(self, keep_times: bool):
        self.step_budget = MIN_STEP_BUDGET   # the slowest recent piece of generation
        self.spent = 0.0                     # seconds of the event being generated, over its calls
        self.inference: list[float] | None = [] if keep_times else None   # seconds per event, for --stats

    def room(self, now: float, lead: float, lookahead: float, due: float | None) -> bool:
        """May a piece of generation run now? `lead`: seconds already generated ahead of `now`;
        `due`: the next note or tick that must leave on time."""
        if lead >= lookahead:
            return False
        # a piece right now could make the next note or tick late, unless we are about to run dry
        return due is None or due - now > 2 * self.step_budget or lead < lookahead / 4

    def generate(self, next_event: Callable[[float | None], np.ndarray | None], longest_piece: Callable[[], float],
                 due: float | None) -> np.ndarray | None:
        """One call of `next_event(until)`: the event, or None when a planned beat yielded."""
        t = time.perf_counter()
        event = next_event(None if due is None else due - self.step_budget)
        took = time.perf_counter() - t
        # the slowest recent piece (one stall under load should not slow generation for good)
        self.step_budget = max(longest_piece() or took, 0.99 * self.step_budget, MIN_STEP_BUDGET)
        self.spent += took
        if event is None:
            return None
        if self.inference is not None:
            self.inference.append(self.spent)
        self.spent = 0.0
        return event
