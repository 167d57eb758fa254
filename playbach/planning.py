"""Planning an Improviser's next beat: draw several continuations, keep the one the model likes.

From the state after the last planned note, `plan` candidates are drawn to the next beat (its
chord included), each note under every steering mask as a single draw is. The model judges
them: a candidate's score is the mean log-probability of its pitches under the model's
untempered pitch head (the memory mixed in), plus the expected log-probability of the pitch of
the note after it (judged without drawing it, from the state the candidate leads to); one is kept
by exp(score / PLAN_TEMPERATURE) and its notes are played one by one.

The work is spread over the notes: while a beat's notes are handed out, the next beat's
candidates are drawn a few per note, so each call does about `plan` model steps instead of a
whole beat's planning at once (the player's loop has a lookahead to fill, not a burst to absorb).
A change of steering drops what was planned and not played (drop()).
"""
from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from playbach.sampler import draw, weights

if TYPE_CHECKING:
    from playbach.improviser import Improviser, Snapshot

PLAN_TEMPERATURE = 0.1   # of the choice among candidates by their score (0 = always the best)
PLAN_EVENTS = 16         # at most this many notes in a candidate (a beat of chords stacked on chords)

Candidate = list[tuple[np.ndarray, "Snapshot"]]   # each note's emitted values and the state after it


class Planner:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.planned: deque[tuple[np.ndarray, Snapshot]] = deque()   # the kept beat's notes to come
        self.trials: list[tuple[Candidate, float]] = []   # the next beat's candidates so far, scored
        self.start: Snapshot | None = None       # the state they start from: after the last planned note
        self.last_played: Snapshot | None = None  # the state after the last note handed out

    def next_event(self, imp: Improviser) -> np.ndarray:
        """The next planned note; the next beat's candidates drawn a share at a time."""
        if not self.planned:
            if self.start is None:
                self._begin(imp, imp._save())
            self._try(imp, imp.plan - len(self.trials))
            self._choose(imp)
        event, self.last_played = self.planned.popleft()
        self._try(imp, math.ceil((imp.plan - len(self.trials)) / (len(self.planned) + 1)))
        return event

    def drop(self, imp: Improviser) -> None:
        """Forget what was planned and not played: the Improviser goes back to the state after the
        last note handed out, and the next note is drawn afresh under the steering in force."""
        if self.start is not None and self.last_played is not None:
            imp._restore(self.last_played)
        self.reset()

    def _begin(self, imp: Improviser, start: Snapshot) -> None:
        tpq = imp.codec.ticks_per_quarter
        self.start, self.trials = start, []
        self.beat = (start.sounding[1] // tpq + 1) * tpq     # the next beat after the last note's onset

    def _try(self, imp: Improviser, n: int) -> None:
        """Draw and score `n` more candidates from self.start; the Improviser is left there."""
        for _ in range(n):
            imp._restore(self.start)
            notes, logp = self._candidate(imp)
            following = np.asarray(imp.memory.mix(imp.probs)[1], dtype=np.float64)
            score = logp / len(notes) + float(following @ np.log(np.maximum(following, 1e-12)))
            self.trials.append((notes, score))
        if n > 0:
            imp._restore(self.start)

    def _candidate(self, imp: Improviser) -> tuple[Candidate, float]:
        """Notes drawn and played until one would start after self.beat (that one is dropped),
        each with the state after it, and their summed pitch log-probability."""
        notes: Candidate = []
        logp = 0.0
        while len(notes) < PLAN_EVENTS:
            ids, event, p = imp._draw()
            if notes and imp.sounding.now + int(event[0]) > self.beat:
                imp._restore(notes[-1][1])   # the draw moved the chord and density counters
                break
            logp += math.log(max(p, 1e-12))
            imp._played(ids, event)
            notes.append((event, imp._save()))
        return notes, logp

    def _choose(self, imp: Improviser) -> None:
        """Keep one candidate by its score; the next beat's candidates start where it ends."""
        scores = np.array([score for _, score in self.trials])
        w = weights(np.exp(scores - scores.max()), PLAN_TEMPERATURE)
        chosen = self.trials[draw(w, imp.rng, PLAN_TEMPERATURE <= 0)][0]
        self.planned, self.last_played = deque(chosen), self.start
        imp._restore(chosen[-1][1])
        self._begin(imp, chosen[-1][1])
