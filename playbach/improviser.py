"""Event after event from the model: the seed's events first (played as given), then samples.

The model carries its own state (LSTM state or window); each event goes through `step`, whose
output is the distribution of the next one, and through the repeat memory, which mixes in what
followed the same passage earlier in the take (playbach/memory.py). Seeds come from a bundle
opening, a MIDI file or a phrase someone just played (that one is only listened to, not played
back, but the memory may echo it).

Planning (`plan` > 0, playbach/planning.py): several continuations of the next beat are drawn
from the model's state and one is kept by the model's own judgement; a model offers save() and
restore() of its state to be planned with (one without them plays unplanned). While a density
aim is set, notes are drawn one at a time: the aim is a steering of each draw.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np

from playbach.errors import UserError
from playbach.heads import DURATION, duration_given
from playbach.events import Codec, merge_overlaps, notes_to_events, quantize_notes
# a live change of mode bends the new key's third and sixth as move_to_key does the seed's
from playbach.keys import _TO_MAJOR, _TO_MINOR, MODES, PROFILES, Key, key_of_events
from playbach.memory import RepeatMemory
from playbach.midifile import read_midi
from playbach.planning import Planner
from playbach.sampler import sample, sample_event
from playbach.sounding import Sounding
from playbach.steering import Steering, onset_mean, pitch_mask

SEED_EVENTS = 32    # how much of a MIDI file seeds the model (about what a bundle opening holds)
MAX_CHORD = 12      # a model stuck on onset 0 would stack notes forever without time passing
DENSITY_GAIN = 0.2  # per step, the share of the density debt (ticks) added to the onset aim
DEBT_LIMIT = 64.0   # ticks: a debt the onsets cannot pay (an aim beyond them) stays bounded
KEY_WINDOW = 32     # emitted events the key in force is found from when `key` changes live
KEY_SETTLE = 8      # quarters after a live key change whose notes keep to the new key's scale
MIDI_PITCHES = 128
KEY_PULL = 8.0      # while it settles, the pitch head is weighted by the new key's profile to this power
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}  # minor: natural + leading tone


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
    memory: tuple[np.ndarray, np.ndarray]
    sounding: tuple[np.ndarray, int]
    recent: tuple
    probs: list[np.ndarray] | None
    counters: tuple[int, float, int, bool]     # chord, onset_debt, settle_left, settle_started


class Improviser:
    def __init__(self, model: StepSource, codec: Codec, rng: np.random.Generator,
                 temperature: float = Steering.temperature, top_k: int = Steering.top_k,
                 memory: RepeatMemory | None = None):
        self.model, self.codec, self.rng = model, codec, rng
        # a model without save() and restore() cannot be planned with
        self.steering = Steering(temperature=temperature, top_k=top_k,
                                 plan=Steering.plan if hasattr(model, "save") else 0)
        self.planner = Planner()
        self.onset_debt = 0.0    # ticks the take is behind (+) or ahead of its density aim
        self.range_mask: np.ndarray | None = None                 # None: every pitch
        self.onset_values = np.asarray(codec.vocab["onset"], dtype=np.float64)
        self.memory = memory or RepeatMemory()   # without weights it only watches
        self.pending: deque[np.ndarray] = deque()
        self.probs: list[np.ndarray] | None = None
        self.pitch_values = np.asarray(codec.vocab["pitch"], dtype=np.int64)
        # the live key (set_key): the pitch emitted for each model pitch token is its own plus the
        # offset of its pitch class; the model is fed its own tokens, so its state stays in its frame
        self.offsets = np.zeros(12, dtype=np.int64)
        self.emitted = self.pitch_values.copy()
        self.key: Key | None = None              # the key asked live; None = the model's own
        self.recent: deque[np.ndarray] = deque(maxlen=KEY_WINDOW)   # emitted events, newest last
        self.key_pull: np.ndarray | None = None    # pitch-head weights toward the live key, while it settles
        self.scale_mask: np.ndarray | None = None  # tokens emitted in the live key's scale, while it settles
        self.settle_left = 0                       # ticks of that left (counted from the first note after)
        self.settle_started = False
        self.sounding = Sounding(MIDI_PITCHES)   # by emitted pitch
        self.chord = 0
        onsets = codec.vocab["onset"]
        self.smallest_step = next((i for i, v in enumerate(onsets) if v > 0), 0)

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
        offsets, mask = self._fit(self.offsets, steering.pitch_min, steering.pitch_max)
        # one assignment for the mask, so a sample never sees half a change
        self.offsets, self.emitted, self.range_mask = offsets, self._emitted(offsets), mask
        self.steering = steering
        if "density" in changes:
            self.onset_debt = 0.0

    @property
    def plan(self) -> int:
        return self.steering.plan

    @plan.setter
    def plan(self, value: int) -> None:
        self.steer(plan=value)

    def pitch_allowed(self) -> np.ndarray | None:
        """The pitch tokens the next sample may choose (None = all): the one place where masks on
        the pitch head are combined (the range, in the emitted frame: a token is allowed when the
        pitch it is emitted as lies in the range and in the model's vocabulary; any further mask
        is ANDed here); for KEY_SETTLE quarters after a live key change, also the new key's scale,
        unless that leaves no pitch in the range (the range wins)."""
        if self.settle_left > 0 and self.scale_mask is not None:
            both = self.scale_mask if self.range_mask is None else self.scale_mask & self.range_mask
            if both.any():
                return both
        return self.range_mask

    # --- the live key ------------------------------------------------------------------------
    def _emitted(self, offsets: np.ndarray) -> np.ndarray:
        return self.pitch_values + offsets[self.pitch_values % 12]

    def _range_mask(self, offsets: np.ndarray, low: int, high: int) -> np.ndarray | None:
        emitted = self._emitted(offsets)
        low, high = max(low, self.pitch_values[0]), min(high, self.pitch_values[-1])
        mask = (emitted >= low) & (emitted <= high)
        return None if mask.all() else mask

    def _fit(self, offsets: np.ndarray, low: int, high: int) -> tuple[np.ndarray, np.ndarray | None]:
        """`offsets` moved by octaves so that some token is emitted inside [low, high] and the
        vocabulary, and its mask (None = all). The offsets are first centred (median in -6 .. 5:
        the take stays within a tritone of the model's own register, so at most 6 semitones of
        the vocabulary's edge are masked); then the other octaves; then, if a bent degree is all
        the range could hold, the plain transposition (some octave of it always reaches a range
        that overlaps the vocabulary: the vocabulary spans more than an octave)."""
        offsets = offsets - 12 * int(np.floor((np.median(offsets) + 6) / 12))
        plain = np.full(12, int(np.median(offsets)), dtype=np.int64)
        for candidate in (offsets, offsets - 12, offsets + 12, plain, plain - 12, plain + 12):
            mask = self._range_mask(candidate, low, high)
            if mask is None or mask.any():
                return candidate, mask
        return np.zeros(12, dtype=np.int64), self._range_mask(np.zeros(12, dtype=np.int64), low, high)

    def key_in_force(self) -> Key | None:
        """The key of the last KEY_WINDOW emitted events (with the seed still to come if fewer
        than 8 have been emitted), by playbach.keys' finder; None before any note."""
        notes = list(self.recent)
        if len(notes) < 8:
            pending = [self.codec.decode(ids)[0] for ids in list(self.pending)[:KEY_WINDOW - len(notes)]]
            notes += [(o, self._emit_seed(v), d, vel) for o, v, d, vel in pending]
        return key_of_events(np.array(notes)) if notes else None

    def set_key(self, key: Key | None) -> None:
        """Move what follows to `key` without a gap (None: back to the model's own frame): the
        emitted pitches are transposed by the smallest shift (-6 .. +5 semitones) from the key in
        force (key_in_force()) to `key`, and when the modes differ the new key's third and sixth
        are bent as the seed's are (harmonic minor keeps its leading tone). The notes of the first
        KEY_SETTLE quarters keep to the new key's scale (a mask, as the range is: the model's key
        8 quarters on was its last 32 notes' key at 13 of 48 points of 12 takes: it modulates that often).
        The model keeps being fed its own tokens and stays free to modulate after that; the
        transposition stays, so it modulates from the new key."""
        self.drop_plan()
        offsets = np.zeros(12, dtype=np.int64)
        current = self.key_in_force() if key is not None else None
        if key is not None and current is not None:
            delta = (key.tonic - current.tonic + 6) % 12 - 6
            emitted = np.arange(12) + self.offsets + delta          # each model pitch class, emitted
            if current.mode != key.mode:
                table = _TO_MINOR if key.mode == "minor" else _TO_MAJOR
                degree = (emitted - key.tonic) % 12
                emitted = emitted + np.array([table.get(d, d) - d for d in degree])
            offsets = emitted - np.arange(12)
        offsets, mask = self._fit(offsets, self.steering.pitch_min, self.steering.pitch_max)
        emitted = self._emitted(offsets)
        scale = None if key is None else np.isin((emitted - key.tonic) % 12, SCALES[key.mode])
        self.settle_left, self.settle_started = 0, False   # no half-changed mask for the next sample
        self.offsets, self.emitted, self.range_mask, self.key = offsets, emitted, mask, key
        self.scale_mask = scale
        self.key_pull = None if key is None else \
            PROFILES["krumhansl"][MODES.index(key.mode)][(emitted - key.tonic) % 12] ** KEY_PULL
        self.settle_left = 0 if key is None else KEY_SETTLE * self.codec.ticks_per_quarter

    def _emit_seed(self, value: int) -> int:
        """A seed pitch (not the model's choice) as emitted: moved with the live key, then folded
        by octaves into the range and vocabulary (fit_seed did so for the starting range)."""
        pitch = int(value + self.offsets[int(value) % 12])
        if not self.offsets.any():
            return int(value)
        low, high = max(self.steering.pitch_min, self.pitch_values[0]), min(self.steering.pitch_max, self.pitch_values[-1])
        while pitch < low:
            pitch += 12
        while pitch > high:
            pitch -= 12
        return pitch if pitch >= low else int(value)

    def unsounded_pitch(self, ids: np.ndarray, pitch_probs: np.ndarray) -> int:
        """The sampled pitch, or, if it sounds at the event's onset, one drawn again from the pitch
        head with every sounding pitch masked (and the other pitch masks). Drawing again only on a
        hit gives the masked distribution (exactly so without top-k) and leaves a seeded take's
        random stream alone where nothing sounds. Fallback: if the masks leave no pitch, the
        first draw stands and the scheduler cuts the sounding note short, as it did before."""
        sounding = self.sounding.at(self.codec.vocab["onset"][ids[0]])[np.clip(self.emitted, 0, MIDI_PITCHES - 1)]
        if not sounding[ids[1]]:
            return int(ids[1])
        allowed = ~sounding if self.pitch_allowed() is None else ~sounding & self.pitch_allowed()
        if not allowed.any():
            return int(ids[1])
        return sample(pitch_probs, self.rng, self.steering.temperature, self.steering.top_k, allowed)

    def _onset_aim(self) -> float | None:
        """The mean onset distance (ticks) the next sample aims at: the density's, corrected by
        what the take is behind or ahead (the tilt only sets each step's expectation; the model
        answers a tilted past with its own leanings, so without this a take drifts off the aim)."""
        aim = onset_mean(self.codec, self.steering.density)
        if aim is None:
            return None
        return float(np.clip(aim + DENSITY_GAIN * self.onset_debt, self.onset_values[0], self.onset_values[-1]))

    def prime(self, events: np.ndarray) -> None:
        """Start afresh from these events (values); they are played before the model's own."""
        self.model.reset()
        self.memory.reset()
        self.sounding.reset()
        self.recent.clear()
        self.planner.reset()
        self.probs = None
        self.offsets, self.emitted, self.key = np.zeros(12, dtype=np.int64), self.pitch_values.copy(), None
        self.scale_mask, self.settle_left = None, 0
        self.range_mask = self._range_mask(self.offsets, self.steering.pitch_min, self.steering.pitch_max)
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
        events[:, 1] -= int(np.median(self.offsets))   # into the model's frame (a live key's transposition)
        for ids in self.codec.encode(events):
            self.memory.observe(ids)
            self.probs = self.model.step(ids)

    @property
    def longest_piece(self) -> float | None:
        """Seconds of the longest indivisible piece of the last next_event() (a planned beat's
        candidate); None when the call was one piece."""
        return self.planner.longest or None if self.steering.plan > 0 and self.steering.density <= 0 else None

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
        # a density aim steers the rhythm draw by draw; planning's choice by pitch likelihood leans
        # to candidates with chord notes and would pull against it, so the aim is met unplanned
        if self.steering.plan <= 0 or self.steering.density > 0:
            ids, event, _ = self._draw()
            return self._played(ids, event)
        return self.planner.next_event(self, until)

    def _heads(self) -> list[np.ndarray]:
        """The next event's distributions as drawn from: the model's, the memory mixed in, and
        while a live key settles the pitch head pulled toward it."""
        heads = self.memory.mix(self.probs)
        if self.settle_left > 0 and self.key_pull is not None:
            heads = [heads[0], heads[1] * self.key_pull / (heads[1] @ self.key_pull), *heads[2:]]
        return heads

    def _draw(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The next event drawn under every steering mask: its ids, its emitted values and the
        probability of its pitch under the untempered, unmasked pitch head. Steps no model."""
        heads = self._heads()
        s = self.steering
        rhythm = s.rhythm
        ids = sample_event(heads, self.rng, s.temperature, s.top_k, rhythm, self.pitch_allowed(),
                           self.onset_values, self._onset_aim())
        self.chord = self.chord + 1 if self.codec.vocab["onset"][ids[0]] == 0 else 0
        if self.chord > MAX_CHORD:
            ids[0], self.chord = self.smallest_step, 0
        if s.density > 0:
            debt = self.onset_debt + onset_mean(self.codec, s.density) - self.onset_values[ids[0]]
            self.onset_debt = float(np.clip(debt, -DEBT_LIMIT, DEBT_LIMIT))
        pitch = self.unsounded_pitch(ids, heads[1])
        if pitch != ids[1] and heads[DURATION].ndim == 2:   # its length is the new pitch's
            ids[DURATION] = sample(duration_given(heads[DURATION], pitch), self.rng, rhythm, s.top_k)
        ids[1] = pitch
        if self.settle_left > 0:
            if self.settle_started:
                self.settle_left -= int(self.onset_values[ids[0]])
            self.settle_started = True
        event = self.codec.decode(ids)[0]
        event[1] = self.emitted[ids[1]]
        return ids, event, float(heads[1][pitch])

    def drop_plan(self) -> None:
        """Forget the notes planned and not played yet (playbach/planning.py)."""
        self.planner.drop(self)

    # --- what planning saves and restores -------------------------------------------------------
    def _save(self) -> Snapshot:
        # the memory's arrays are replaced, never changed in place, by observe(): a reference holds them
        return Snapshot(self.model.save(), (self.memory.events, self.memory.runs),
                        (self.sounding.ends.copy(), self.sounding.now), tuple(self.recent), self.probs,
                        (self.chord, self.onset_debt, self.settle_left, self.settle_started))

    def _restore(self, s: Snapshot) -> None:
        self.model.restore(s.model)
        self.memory.events, self.memory.runs = s.memory
        self.sounding.ends[:], self.sounding.now = s.sounding
        self.recent.clear()
        self.recent.extend(s.recent)
        self.probs = s.probs
        self.chord, self.onset_debt, self.settle_left, self.settle_started = s.counters

    def _played(self, ids: np.ndarray, event: np.ndarray) -> np.ndarray:
        """`event` (emitted values) is the take's next: note it, and step the model on `ids`."""
        self.sounding.add(event[0], event[1], event[2])
        self.recent.append(event)
        self.memory.observe(ids)
        self.probs = self.model.step(np.asarray(ids, dtype=np.int64))
        return event


def midi_seed(path: str, codec: Codec) -> np.ndarray:
    """The first SEED_EVENTS events of a MIDI file, on the codec's grid."""
    try:
        raw = read_midi(path)
    except ValueError as e:
        raise UserError(str(e)) from e
    if not raw:
        raise UserError(f"{path}: the MIDI file has no notes to start from")
    notes, _ = quantize_notes(raw, codec.ticks_per_quarter)
    notes, _ = merge_overlaps(notes)
    events = notes_to_events(notes)[:SEED_EVENTS]
    events[0, 0] = 0
    return events


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
