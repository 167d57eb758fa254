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
Given a deadline, a call yields once the next candidate could end after it (None: call again; at
least one candidate is drawn per call, so a take never stalls): the player's sent clock ticks
and notes leave between the pieces. The random stream is the same however the work is split.
A change of steering drops what was planned and not played (drop()).
"""
from __future__ import annotations

import math
import time
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
        self.slowest = 0.0    # seconds of the slowest recent candidate (decays by 1 % a candidate)
        self.longest = 0.0    # seconds of the longest candidate drawn in the last call
        self.reset()

    def reset(self) -> None:
        self.planned: deque[tuple[np.ndarray, Snapshot]] = deque()   # the kept beat's notes to come
        self.trials: list[tuple[Candidate, float]] = []   # the next beat's candidates so far, scored
        self.start: Snapshot | None = None       # the state they start from: after the last planned note
        self.last_played: Snapshot | None = None  # the state after the last note handed out
        self.beat = 0                            # the tick the candidates end at (the next beat)

    def next_event(self, imp: Improviser, until: float | None = None) -> np.ndarray | None:
        """The next planned note; the next beat's candidates drawn a share at a time. With
        `until` (time.monotonic()), no candidate is begun that could end after it: None when the
        beat is not chosen yet (call again)."""
        self.longest = 0.0
        if not self.planned:
            if self.start is None:
                self._begin(imp, imp._save())
            if not self._try(imp, imp.plan - len(self.trials), until):
                return None
            self._choose(imp)
        event, self.last_played = self.planned.popleft()
        self._try(imp, math.ceil((imp.plan - len(self.trials)) / (len(self.planned) + 1)), until)
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

    def _try(self, imp: Improviser, n: int, until: float | None = None) -> bool:
        """Draw and score up to `n` more candidates from self.start (the first of a call always,
        the rest while they fit before `until`); the Improviser is left there. True if all were."""
        done = 0
        while done < n:
            began = time.monotonic()
            if self.longest > 0 and until is not None and began + self.slowest > until:
                break
            imp._restore(self.start)
            notes, logp = self._candidate(imp)
            following = np.asarray(imp.memory.mix(imp.probs)[1], dtype=np.float64)
            score = logp / len(notes) + float(following @ np.log(np.maximum(following, 1e-12)))
            self.trials.append((notes, score))
            took = max(time.monotonic() - began, 1e-9)
            self.longest, self.slowest, done = max(self.longest, took), max(took, 0.99 * self.slowest), done + 1
        if done > 0:
            imp._restore(self.start)
        return done >= n

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
        chosen = self.trials[choose_by_score([score for _, score in self.trials], PLAN_TEMPERATURE, imp.rng)][0]
        self.planned, self.last_played = deque(chosen), self.start
        imp._restore(chosen[-1][1])
        self._begin(imp, chosen[-1][1])


def choose_by_score(scores: list[float], temperature: float, rng: np.random.Generator) -> int:
    """The index of one of several candidates, drawn by exp(score / temperature) (0: the best)."""
    scores = np.asarray(scores, dtype=np.float64)
    return draw(weights(np.exp(scores - scores.max()), temperature), rng, temperature <= 0)
