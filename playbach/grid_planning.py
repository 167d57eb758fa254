"""Planning a grid model's next beat: draw a few continuations, keep one the model likes better.

From the rows drawn so far, `plan` candidates are drawn to the next beat (the next 16th that
is a multiple of four), every voice under every steering mask as a single draw is. The model
judges them by the pitches its voices move to: each move counts its log-probability under the
model's own (calibrated, untempered) distribution of where the voice goes given that it moves,
less that distribution's expected log-probability, so a move is weighed against what the model
expected of that moment. A candidate's score is their sum over the square root of its moves:
the spread of a sum of n such terms grows as sqrt(n), so a beat is neither preferred nor shunned
for how many of its voices move (the rhythm still pays a little: a passing 16th is an unlikely
move; docs/listening.md). One candidate is kept by exp(score / PLAN_TEMPERATURE).

The grid model's own distribution is already close to Bach's (docs/listening.md): a strong
choice (many candidates, a cold temperature) makes music more uniform than his, soprano lines
all steps and few passing notes, so the grid plans gently: PLAN_TEMPERATURE 1 and, by default,
two candidates.

Each candidate is one piece of work: a call with a deadline yields between candidates, and the
improviser's state between them is the beat's start, so a take-back or a yield finds it whole.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from playbach.grid import STEPS_PER_QUARTER
from playbach.planning import choose_by_score

if TYPE_CHECKING:
    from playbach.grid_improviser import GridImproviser

PLAN_TEMPERATURE = 1.0    # of the choice among candidates by their score


class GridPlanner:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start: Any = None                       # the improviser's drawing state at the beat's start
        self.trials: list[tuple[Any, float]] = []    # each candidate's end state and score
        self.score = 0.0                              # of the candidate being drawn
        self.moves = 0

    def judge(self, p: np.ndarray, hold: int, token: int) -> None:
        """Score one voice's drawn token: a move, by where it went (`hold`: the token that holds
        the voice's note, -1 if none)."""
        if token == hold:
            return
        q = p.astype(np.float64)
        if hold >= 0:
            q[hold] = 0.0
        q /= max(q.sum(), 1e-12)
        logq = np.log(np.maximum(q, 1e-12))
        self.score += float(logq[token]) - float(q @ logq)
        self.moves += 1

    def candidate(self, imp: GridImproviser) -> None:
        """Draw one more candidate from the beat's start; with `plan` of them, keep one."""
        if self.start is None:
            self.start, self.trials = imp._save(), []
        self.score, self.moves = 0.0, 0
        end = (imp.t // STEPS_PER_QUARTER + 1) * STEPS_PER_QUARTER   # the next beat
        while imp.t < end:
            imp._draw_row()
        score = self.score / math.sqrt(max(self.moves, 1))
        self.trials.append((imp._save(), score))
        if len(self.trials) < imp.plan:
            imp._restore(self.start)
        else:
            imp._restore(self.choose(imp.rng))
            self.reset()

    def choose(self, rng: np.random.Generator) -> Any:
        """One candidate's end state, drawn by exp(score / PLAN_TEMPERATURE)."""
        return self.trials[choose_by_score([s for _, s in self.trials], PLAN_TEMPERATURE, rng)][0]
