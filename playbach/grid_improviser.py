"""Playing a grid model: rows drawn ahead voice by voice, notes handed out as events once their
length is known.

A grid model (playbach/grid.py) decides every 16th, voice by voice, whether each voice holds or
moves. A note's length is therefore known only when its voice moves on; the GridImproviser draws
rows ahead until the earliest note not yet handed out is complete and no note still held could
come before it, then hands it to the player as the event representation's next event (onset
distance, pitch, duration, velocity). The chorales' notes last at most 80 16ths (99.96 % at most
two bars), so the rows drawn ahead stay within a few bars; a voice held MAX_NOTE 16ths is struck
again, so nothing waits on an endless hold.

It offers the player what the Improviser offers (prime, listen, next_event, steer, set_key), with
the same steering on the same terms: `temperature` reshapes the pitch a voice moves to,
`rhythm_temperature` (else the temperature) whether it holds or moves, `top_k` cuts the pitches,
the pitch range and a live key's scale mask the pitches a voice may move to (a hold is always
allowed: it strikes nothing new), a live key moves what is emitted (playbach/live_key.py), and a
density aim tilts hold-or-move toward the notes per quarter asked. A change of steering takes
back every row drawn ahead from the first note not handed out, and draws them again under the new
steering, the notes already handed out held as they were sent (the model is fed them, not asked).
With `plan` > 0 each beat's rows are planned (playbach/grid_planning.py): a few candidates
drawn from one state, one kept by the model's own likelihood of where its voices move.
"""
from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from playbach.errors import UserError
from playbach.events import Codec
from playbach.grid import BAR, SILENT, STEPS_PER_QUARTER, VOICES, GridStep, rows_of_events
from playbach.grid_planning import GridPlanner
from playbach.improviser import STEERING
from playbach.jsb import VELOCITY
from playbach.keys import Key, key_of_events
from playbach.live_key import LiveKey
from playbach.sampler import draw, weights
from playbach.steering import Steering, pitch_mask

MAX_NOTE = 64        # 16ths a voice may hold one note before it is struck again
KEY_WINDOW = 32      # emitted notes the key in force is found from
DENSITY_GAIN = 1.0   # per note of debt, the factor e^gain on the odds of a move
DEBT_LIMIT = 32.0    # notes: an aim the model cannot reach keeps its pull bounded
MIDI_PITCHES = 128


class Held(NamedTuple):
    """A voice's note: where it starts, its emitted pitch and model token, and where it ends
    once that is known (a note handed out; None while the voice may still hold it)."""
    start: int
    pitch: int
    voice: int
    token: int
    end: int | None = None


@dataclass
class RowState:
    """Everything the next row's draw depends on, kept before each row drawn ahead."""
    t: int
    model: Any
    previous: int
    row: np.ndarray
    held: list[Held | None]
    debt: float


@dataclass
class Drawn:
    """Everything drawing rows ahead changes: what planning saves and restores."""
    t: int
    model: Any
    previous: int
    row: np.ndarray
    held: list[Held | None]
    done: list[tuple[int, int, int, int, int]]
    debt: float
    kept: list[RowState]


class GridImproviser:
    def __init__(self, model: GridStep, codec: Codec, rng: np.random.Generator,
                 temperature: float = Steering.temperature, top_k: int = Steering.top_k):
        if codec.ticks_per_quarter != STEPS_PER_QUARTER:
            raise UserError(f"a grid bundle's codec has {STEPS_PER_QUARTER} ticks per quarter, "
                            f"not {codec.ticks_per_quarter}")
        self.model, self.codec, self.rng = model, codec, rng
        self.steering = Steering(temperature=temperature, top_k=top_k)
        self.live_key = LiveKey(np.arange(MIDI_PITCHES), codec.ticks_per_quarter)
        self.pending: deque[np.ndarray] = deque()        # the seed's events, played as given
        self.recent: deque[np.ndarray] = deque(maxlen=KEY_WINDOW)
        self.longest_piece: float | None = None          # seconds of the slowest row of the last call
        self.planner = GridPlanner()
        self._restart()

    def _restart(self) -> None:
        self.t = 0                                       # the next row's 16th
        self.row = np.zeros(VOICES, dtype=np.int64)      # the last row's tokens (ORDER, model frame)
        self.previous = SILENT                           # the last token fed
        self.held: list[Held | None] = [None] * VOICES   # the note each voice sounds
        self.done: list[tuple[int, int, int, int, int]] = []   # (start, pitch, duration, voice, token) to hand out
        self.sent: list[Held] = []                       # notes handed out that may still sound in rows drawn
        self.kept: deque[RowState] = deque()             # before each row drawn ahead
        self.last_start = 0                              # the 16th of the last note handed out
        self.debt = 0.0                                  # notes behind (+) the density aim
        self.planner.reset()

    @property
    def plan(self) -> int:
        return self.steering.plan

    @property
    def key(self) -> Key | None:
        return self.live_key.key

    def steer(self, **changes: float) -> None:
        """Change any of STEERING from the next note handed out on; a pitch range that holds none
        of the model's pitches is a UserError, and then nothing changes."""
        unknown = set(changes) - set(STEERING)
        if unknown:
            raise ValueError(f"GridImproviser.steer: not a steering setting: {sorted(unknown)}")
        steering = replace(self.steering, **changes)
        pitch_mask(self.codec, steering.pitch_min, steering.pitch_max)
        self._take_back()
        self.live_key.fit_range(steering.pitch_min, steering.pitch_max)
        if "density" in changes:
            self.debt = 0.0
        self.steering = steering

    def key_in_force(self) -> Key | None:
        notes = list(self.recent) or list(self.pending)[:KEY_WINDOW]
        return key_of_events(np.array(notes)) if notes else None

    def set_key(self, key: Key | None) -> None:
        """Move what follows to `key` (None: back to the model's own frame) from the key in force."""
        self._take_back()
        current = self.key_in_force() if key is not None else None
        self.live_key.move_to(key, current, self.steering.pitch_min, self.steering.pitch_max)

    def prime(self, events: np.ndarray) -> None:
        """Start afresh from these events (values); they are played before the model's own."""
        self.recent.clear()
        self.live_key.reset(self.steering.pitch_min, self.steering.pitch_max)
        events = np.array(events, dtype=np.int64).reshape(-1, 4)
        if len(events):
            events[0, 0] = 0
        self._start_from(events)
        self.last_start = int(events[:, 0].sum())
        self.pending = deque(events)

    def listen(self, events: np.ndarray) -> None:
        """Set the model's state from what someone played; the model's next notes answer it, the
        first from the end of the phrase."""
        self.pending.clear()
        events = np.array(events, dtype=np.int64).reshape(-1, 4)
        events[:, 1] -= self.live_key.model_shift
        self._start_from(events)
        self.last_start = self.t

    def _start_from(self, events: np.ndarray) -> None:
        """The model fed the rows of `events` (not drawn: a seed, a phrase); the voices sounding at
        their end go on as the model's notes from there (struck again unless it moves them)."""
        self.model.reset()
        self._restart()
        for row in rows_of_events(events, self.codec.ticks_per_quarter):
            for v in range(VOICES):
                self.model.logits((self.previous, self.row[v], v, self.t % BAR))   # fed, not drawn
                self.previous = int(row[v])
            self.row = np.asarray(row, dtype=np.int64)
            self.t += 1
        self.held = [self._new(v, tok) for v, tok in enumerate(self.row)]

    def _new(self, voice: int, token: int) -> Held | None:
        if token == SILENT:
            return None
        return Held(self.t, int(self.live_key.emitted[token - 1]), voice, int(token))

    # --- handing out ------------------------------------------------------------------------------
    def next_event(self, until: float | None = None) -> np.ndarray | None:
        """The next event's values (onset distance, pitch, duration, velocity) in 16ths. With
        `until` (time.monotonic()), rows are drawn until it passes (one at least): None, call
        again (a note held for bars takes that many rows drawn ahead before it is handed out)."""
        self.longest_piece = None
        if self.pending:
            event = self.pending.popleft().copy()
            event[1] = self.live_key.emit_seed(int(event[1]), self.steering.pitch_min, self.steering.pitch_max)
            self.recent.append(event)
            return event
        self.longest_piece = 0.0
        while not self._ready():
            began = time.monotonic()
            if self.steering.plan > 0:
                self.planner.candidate(self)
            else:
                self._draw_row()
            self.longest_piece = max(self.longest_piece, time.monotonic() - began)
            if until is not None and not self._ready() and time.monotonic() > until:
                return None
        start, pitch, duration, voice, token = heapq.heappop(self.done)
        self.sent.append(Held(start, pitch, voice, token, start + duration))
        event = np.array([start - self.last_start, pitch, duration, VELOCITY], dtype=np.int64)
        self.last_start = start
        self.live_key.played(int(event[0]))
        self.recent.append(event)
        self._forget()
        return event

    def _unsent(self) -> list[tuple[int, int]]:
        """(start, pitch) of the notes drawn and not handed out."""
        return [d[:2] for d in self.done] + [h[:2] for h in self.held if h is not None and h.end is None]

    def _ready(self) -> bool:
        """Whether the first note to hand out is complete and comes before every note held."""
        return bool(self.done) and self.done[0][:2] == min(self._unsent())

    def _forget(self) -> None:
        """Drop what no take-back can reach: rows before the first note not handed out."""
        first = min((s for s, _ in self._unsent()), default=self.t)
        while self.kept and self.kept[0].t < first:
            self.kept.popleft()
        self.sent = [n for n in self.sent if n.end >= first]   # one ending there is held in that row's state

    def _take_back(self) -> None:
        """Undo every row drawn from the first note not handed out on: the next rows are drawn
        under the steering then in force."""
        if self.planner.start is not None:   # a beat half planned: back to its start
            self._restore(self.planner.start)
            self.planner.reset()
        first = min((s for s, _ in self._unsent()), default=self.t)
        while self.kept and self.kept[-1].t > first:
            self.kept.pop()
        if not self.kept or self.kept[-1].t != first:
            return
        s = self.kept.pop()
        self.model.restore(s.model)
        self.t, self.previous, self.row, self.debt = s.t, s.previous, s.row, s.debt
        self.done = []
        ends = {(n.start, n.voice): n for n in self.sent}
        self.held = [None if h is None else ends.get((h.start, h.voice), h) for h in s.held]

    def _save(self) -> Drawn:
        return Drawn(self.t, self.model.save(), self.previous, self.row, list(self.held), list(self.done),
                     self.debt, list(self.kept))

    def _restore(self, s: Drawn) -> None:
        self.model.restore(s.model)
        self.t, self.previous, self.row, self.debt = s.t, s.previous, s.row, s.debt
        self.held, self.done, self.kept = list(s.held), list(s.done), deque(s.kept)

    # --- drawing ----------------------------------------------------------------------------------
    def _forced(self, voice: int) -> Held | None:
        """The note handed out that this voice sounds in the row to draw (its token is fed, not drawn)."""
        return next((n for n in self.sent if n.voice == voice and n.start <= self.t < n.end), None)

    def _draw_row(self) -> None:
        self.kept.append(RowState(self.t, self.model.save(), self.previous, self.row, list(self.held), self.debt))
        row, forced, again = np.empty(VOICES, dtype=np.int64), [None] * VOICES, [False] * VOICES
        for v in range(VOICES):
            ids = (self.previous, self.row[v], v, self.t % BAR)
            forced[v] = self._forced(v)
            held = self.held[v]   # silence goes on, a note drawn may; a note handed out has its length
            can_hold = held.end is None if held is not None else self.row[v] == SILENT
            if forced[v]:
                self.model.logits(ids)   # fed, not drawn
                row[v] = forced[v].token
            else:
                p, hold = self.model.step(ids), int(self.row[v]) if can_hold else -1
                row[v], again[v] = self._choose(p, hold)
                if self.steering.plan > 0:
                    self.planner.judge(p, hold, int(row[v]))
            self.previous = int(row[v])
        self._commit(row, forced, again)

    def _commit(self, row: np.ndarray, forced: list[Held | None], again: list[bool]) -> None:
        """A drawn row: a voice that moved, struck its pitch again or ended a note handed out ends
        its note and begins the next."""
        struck = 0
        for v in range(VOICES):
            held = self.held[v]
            if forced[v] is not None:
                self.held[v] = forced[v]
                continue
            if held is not None and row[v] == self.row[v] and held.end is None and not again[v] \
                    and self.t - held.start < MAX_NOTE:
                continue
            if held is not None and held.end is None and self.t > held.start:
                heapq.heappush(self.done, (held.start, held.pitch, self.t - held.start, v, held.token))
            self.held[v] = self._new(v, int(row[v]))
            struck += row[v] != SILENT
        if self.steering.density > 0:
            aim = self.steering.density / STEPS_PER_QUARTER
            self.debt = float(np.clip(self.debt + aim - struck, -DEBT_LIMIT, DEBT_LIMIT))
        self.row = row
        self.t += 1

    def _choose(self, p: np.ndarray, hold: int) -> tuple[int, bool]:
        """One voice's token from its distribution `p` under the steering (`hold`: the token that
        holds its note, -1 if it has none to hold): pitches pulled toward a live key while it
        settles and masked by the range and scale, tempered by `temperature`; holding against
        moving tempered by the rhythm temperature and tilted by a density aim.
        Returns the token and whether a held pitch is struck again: the one way a density aim
        moves a voice whose every other pitch is masked (the chorales never repeat a pitch: a
        voice's equal rows are one note)."""
        s = self.steering
        moves = self._pulled(p, hold)
        allowed = np.ones(len(p), dtype=bool)
        if self.live_key.allowed() is not None:
            allowed[1:] = self.live_key.allowed()
        if hold < 0:                                         # nothing to hold: every choice strikes
            return draw(weights(moves, s.temperature, s.top_k, allowed), self.rng, s.temperature <= 0), False
        allowed[hold] = True
        if s.rhythm_temperature < 0 and s.density <= 0:      # one temperature over every choice
            return draw(weights(moves, s.temperature, s.top_k, allowed), self.rng, s.temperature <= 0), False
        stay = float(p[hold])
        allowed[hold], moves[hold] = False, 0.0
        w = weights(moves, s.temperature, s.top_k, allowed) if allowed.any() else np.zeros(len(p))
        odds = _tempered_odds(stay, s.rhythm) * np.exp(-DENSITY_GAIN * self.debt if s.density > 0 else 0.0)
        total = w.sum()
        if total <= 0:   # no other pitch allowed: hold, or strike it again
            return hold, draw(np.array([odds, 1.0]), self.rng) == 1
        w = w / total
        w[hold] = odds
        return draw(w, self.rng), False


    def _pulled(self, p: np.ndarray, hold: int) -> np.ndarray:
        """`p` with the pitches a voice may move to pulled toward a live key while it settles,
        their share kept: the pull chooses where a voice goes, not whether it holds."""
        moving = p.copy()
        if hold >= 0:
            moving[hold] = 0.0
        share = moving[1:].sum()
        if share <= 0:
            return p
        out = p.copy()
        out[1:] = self.live_key.pulled(moving[1:] / share) * share
        if hold > 0:
            out[hold] = p[hold]
        return out


def _tempered_odds(stay: float, temperature: float) -> float:
    """The odds of holding, p : 1 - p, reshaped by `temperature` (0 = the likelier side)."""
    stay = min(max(stay, 1e-9), 1 - 1e-9)
    if temperature <= 0:
        return 1e9 if stay > 0.5 else 0.0
    return float((stay / (1 - stay)) ** (1 / temperature))
