"""Event after event from the model: the seed's events first (played as given), then samples.

The model carries its own state (LSTM state or window); each event goes through `step`, whose
output is the distribution of the next one, and through the repeat memory, which mixes in what
followed the same passage earlier in the take (playbach/memory.py). Seeds come from a bundle
opening, a MIDI file or a phrase someone just played (that one is only listened to, not played
back, but the memory may echo it).

The Improviser coordinates parts that each do one job: the live key and the pitch range
(playbach/live_key.py), the density aim and the chord guard (playbach/rhythm.py), the sounding
mask (playbach/sounding.py), the repeat memory, and planning (`plan` > 0, playbach/planning.py):
several continuations of the next beat are drawn from the model's state and one is kept by the
model's own judgement; a model offers save() and restore() of its state to be planned with (one
without them plays unplanned). While a density aim is set, notes are drawn one at a time: the
aim is a steering of each draw.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np

from playbach.errors import UserError
from playbach.events import Codec
from playbach.heads import DURATION, duration_given
from playbach.keys import Key, key_of_events
from playbach.live_key import LiveKey
from playbach.memory import RepeatMemory
from playbach.planning import Planner
from playbach.rhythm import MAX_CHORD, ChordGuard, DensityAim   # MAX_CHORD: read from here by callers
from playbach.sampler import sample, sample_event
from playbach.sounding import Sounding
from playbach.steering import Steering, pitch_mask

KEY_WINDOW = 32     # emitted events the key in force is found from when `key` changes live
MIDI_PITCHES = 128


class StepSource(Protocol):
    """What the Improviser drives: the TFLite step or windowed model on the Pi (playbach.runtime),
    the Keras step model on the desktop (playbach.trainer.step.KerasStepModel)."""

    def reset(self) -> None: ...

    def step(self, ids: np.ndarray) -> list[np.ndarray]:
        """One event's token ids (4,) in; the next event's four distributions out."""

    # optional: a model with these can be planned with (save() -> state, restore(state))
    # def save(self) -> Any: ...
    # def restore(self, state: Any) -> None: ...


# what steer() changes (the live key is set_key's, the tempo the player's)
STEERING = tuple(f.name for f in fields(Steering))


@dataclass
class Snapshot:
    """Everything the Improviser's next draw depends on, after some note: restored to try another
    continuation from the same point."""
    model: Any
    memory: tuple
    sounding: tuple[np.ndarray, int]
    recent: tuple
    probs: list[np.ndarray] | None
    counters: tuple[int, float, tuple[int, bool]]     # the chord guard's, the density debt, the key's settling


class Improviser:
    def __init__(self, model: StepSource, codec: Codec, rng: np.random.Generator,
                 temperature: float = Steering.temperature, top_k: int = Steering.top_k,
                 memory: RepeatMemory | None = None):
        self.model, self.codec, self.rng = model, codec, rng
        # a model without save() and restore() cannot be planned with
        self.steering = Steering(temperature=temperature, top_k=top_k,
                                 plan=Steering.plan if hasattr(model, "save") else 0)
        self.planner = Planner()
        self.memory = memory or RepeatMemory()   # without weights it only watches
        self.pending: deque[np.ndarray] = deque()
        self.probs: list[np.ndarray] | None = None
        self.recent: deque[np.ndarray] = deque(maxlen=KEY_WINDOW)   # emitted events, newest last
        self.live_key = LiveKey(np.asarray(codec.vocab["pitch"]), codec.ticks_per_quarter)
        self.density = DensityAim(np.asarray(codec.vocab["onset"]), codec.ticks_per_quarter)
        self.chords = ChordGuard(codec.vocab["onset"])
        self.sounding = Sounding(MIDI_PITCHES)   # by emitted pitch

    @property
    def plan(self) -> int:
        return self.steering.plan

    @plan.setter
    def plan(self, value: int) -> None:
        self.steer(plan=value)

    @property
    def key(self) -> Key | None:
        """The key asked live; None = the model's own."""
        return self.live_key.key

    def steer(self, **changes: float) -> None:
        """Change any of STEERING from the next sampled event on (values already checked by
        playbach.settings). A pitch range that holds none of the model's pitches is a UserError,
        and then nothing changes."""
        unknown = set(changes) - set(STEERING)
        if unknown:
            raise ValueError(f"Improviser.steer: not a steering setting: {sorted(unknown)}")
        if changes.get("plan", 0) > 0 and not hasattr(self.model, "save"):
            raise UserError(f"plan = {changes['plan']}: the model {type(self.model).__name__} cannot be planned with")
        steering = replace(self.steering, **changes)
        pitch_mask(self.codec, steering.pitch_min, steering.pitch_max)   # the UserError for a range it cannot reach
        self.drop_plan()
        self.live_key.fit_range(steering.pitch_min, steering.pitch_max)
        self.steering = steering
        if "density" in changes:
            self.density.set(steering.density)

    def key_in_force(self) -> Key | None:
        """The key of the last KEY_WINDOW emitted events (with the seed still to come if fewer
        than 8 have been emitted), by playbach.keys' finder; None before any note."""
        notes = list(self.recent)
        if len(notes) < 8:
            pending = [self.codec.decode(ids)[0] for ids in list(self.pending)[:KEY_WINDOW - len(notes)]]
            notes += [(o, self._emit_seed(v), d, vel) for o, v, d, vel in pending]
        return key_of_events(np.array(notes)) if notes else None

    def set_key(self, key: Key | None) -> None:
        """Move what follows to `key` without a gap (None: back to the model's own frame), from
        the key in force (playbach/live_key.py). The model modulates that often that the notes of
        the first quarters keep to the new key's scale; it stays free to modulate after that, and
        the transposition stays, so it modulates from the new key."""
        self.drop_plan()
        current = self.key_in_force() if key is not None else None
        self.live_key.move_to(key, current, self.steering.pitch_min, self.steering.pitch_max)

    def _emit_seed(self, value: int) -> int:
        return self.live_key.emit_seed(value, self.steering.pitch_min, self.steering.pitch_max)

    def unsounded_pitch(self, ids: np.ndarray, pitch_probs: np.ndarray) -> int:
        """The sampled pitch, or, if it sounds at the event's onset, one drawn again from the pitch
        head with every sounding pitch masked (and the other pitch masks). Drawing again only on a
        hit gives the masked distribution (exactly so without top-k) and leaves a seeded take's
        random stream alone where nothing sounds. Fallback: if the masks leave no pitch, the
        first draw stands and the scheduler cuts the sounding note short."""
        sounding = self.sounding.tokens(self.codec.vocab["onset"][ids[0]], self.live_key.emitted)
        if not sounding[ids[1]]:
            return int(ids[1])
        allowed = ~sounding if self.live_key.allowed() is None else ~sounding & self.live_key.allowed()
        if not allowed.any():
            return int(ids[1])
        return sample(pitch_probs, self.rng, self.steering.temperature, self.steering.top_k, allowed)

    def prime(self, events: np.ndarray) -> None:
        """Start afresh from these events (values); they are played before the model's own."""
        self.model.reset()
        self.memory.reset()
        self.sounding.reset()
        self.recent.clear()
        self.planner.reset()
        self.probs = None
        self.live_key.reset(self.steering.pitch_min, self.steering.pitch_max)
        events = np.array(events, dtype=np.int64).reshape(-1, 4)
        if len(events):
            events[0, 0] = 0   # the first note starts the take (its delta was from a note not played)
        self.pending = deque(self.codec.encode(events))

    def listen(self, events: np.ndarray) -> None:
        """Set the model's state from what someone played; the next event answers it."""
        self.model.reset()
        self.memory.reset()
        self.drop_plan()
        self.sounding.reset()   # what someone played sounds on their instrument, not on our port
        self.pending.clear()
        events = np.array(events, dtype=np.int64).reshape(-1, 4)
        events[:, 1] -= self.live_key.model_shift   # into the model's frame
        for ids in self.codec.encode(events):
            self.memory.observe(ids)
            self.probs = self.model.step(ids)

    @property
    def longest_piece(self) -> float | None:
        """Seconds of the longest indivisible piece of the last next_event() (a planned beat's
        candidate); None when the call was one piece."""
        return self.planner.longest or None if self._planning() else None

    def _planning(self) -> bool:
        # a density aim steers the rhythm draw by draw; planning's choice by pitch likelihood leans
        # to candidates with chord notes and would pull against it, so the aim is met unplanned
        return self.steering.plan > 0 and self.steering.density <= 0

    def next_event(self, until: float | None = None) -> np.ndarray | None:
        """The next event's values (onset delta, pitch, duration, velocity). With `until`
        (time.monotonic()) planning yields before it: None, call again (playbach/planning.py)."""
        self.planner.longest = 0.0
        if self.pending:
            ids = self.pending.popleft()
            event = self.codec.decode(ids)[0]
            event[1] = self._emit_seed(event[1])
            return self._played(ids, event)
        if self.probs is None:
            raise RuntimeError("Improviser.next_event before prime() or listen()")
        if self._planning():
            return self.planner.next_event(self, until)
        ids, event, _ = self._draw()
        return self._played(ids, event)

    def _heads(self) -> list[np.ndarray]:
        """The next event's distributions as drawn from: the model's, the memory mixed in, and
        the pitch head pulled toward a live key while it settles."""
        heads = self.memory.mix(self.probs)
        return [heads[0], self.live_key.pulled(heads[1]), *heads[2:]]

    def _draw(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The next event drawn under every steering mask: its ids, its emitted values and the
        probability of its pitch under the untempered, unmasked pitch head. Steps no model."""
        heads, s = self._heads(), self.steering
        ids = sample_event(heads, self.rng, s.temperature, s.top_k, s.rhythm, self.live_key.allowed(),
                           self.density.values, self.density.aim())
        ids[0] = self.chords.check(ids[0])
        self.density.drew(ids[0])
        pitch = self.unsounded_pitch(ids, heads[1])
        if pitch != ids[1] and heads[DURATION].ndim == 2:   # its length is the new pitch's
            ids[DURATION] = sample(duration_given(heads[DURATION], pitch), self.rng, s.rhythm, s.top_k)
        ids[1] = pitch
        self.live_key.played(int(self.density.values[ids[0]]))
        event = self.codec.decode(ids)[0]
        event[1] = self.live_key.emitted[ids[1]]
        return ids, event, float(heads[1][pitch])

    def drop_plan(self) -> None:
        """Forget the notes planned and not played yet (playbach/planning.py)."""
        self.planner.drop(self)

    # --- what planning saves and restores -------------------------------------------------------
    def _save(self) -> Snapshot:
        return Snapshot(self.model.save(), self.memory.state(),
                        (self.sounding.ends.copy(), self.sounding.now), tuple(self.recent), self.probs,
                        (self.chords.count, self.density.debt, self.live_key.state()))

    def _restore(self, s: Snapshot) -> None:
        self.model.restore(s.model)
        self.memory.restore(s.memory)
        self.sounding.ends[:], self.sounding.now = s.sounding
        self.recent.clear()
        self.recent.extend(s.recent)
        self.probs = s.probs
        self.chords.count, self.density.debt, key = s.counters
        self.live_key.restore(key)

    def _played(self, ids: np.ndarray, event: np.ndarray) -> np.ndarray:
        """`event` (emitted values) is the take's next: note it, and step the model on `ids`."""
        self.sounding.add(event[0], event[1], event[2])
        self.recent.append(event)
        self.memory.observe(ids)
        self.probs = self.model.step(np.asarray(ids, dtype=np.int64))
        return event


def choose_opening(openings: list[np.ndarray], names: list[str], wanted: str, rng: np.random.Generator,
                   bundle_path: str) -> tuple[str, np.ndarray]:
    """A bundle opening by index or piece name (substring); '' = a random one."""
    if not openings:
        raise UserError(f"{bundle_path}: the bundle has no openings; give --seed-midi FILE")
    if wanted == "":
        i = int(rng.integers(len(openings)))
    elif wanted.isascii() and wanted.isdigit() and int(wanted) < len(openings):
        i = int(wanted)
    else:
        matches = [i for i, n in enumerate(names) if wanted.lower() in n.lower()]
        if not matches:
            raise UserError(f"opening '{wanted}' is not in {bundle_path}; it has 0..{len(openings) - 1}: "
                            + ", ".join(names))
        i = matches[0]
    return names[i], np.asarray(openings[i], dtype=np.int64)
