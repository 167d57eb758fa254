"""Event after event from the model: the seed's events first (played as given), then samples.

The model carries its own state (LSTM state or window); each event goes through `step`, whose
output is the distribution of the next one, and through the repeat memory, which mixes in what
followed the same passage earlier in the take (playbach/memory.py). Seeds come from a bundle
opening, a MIDI file or a phrase someone just played (that one is only listened to, not played
back, but the memory may echo it).
"""
from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np

from playbach.errors import UserError
from playbach.events import Codec, merge_overlaps, notes_to_events, quantize_notes
from playbach.memory import RepeatMemory
from playbach.midifile import read_midi
from playbach.sampler import sample, sample_event
from playbach.sounding import Sounding
from playbach.settings import DEFAULTS
from playbach.steering import onset_mean, pitch_mask

SEED_EVENTS = 32    # how much of a MIDI file seeds the model (about what a bundle opening holds)
MAX_CHORD = 12      # a model stuck on onset 0 would stack notes forever without time passing
DENSITY_GAIN = 0.2  # per step, the share of the density debt (ticks) added to the onset aim
DEBT_LIMIT = 32.0   # ticks: a debt the onsets cannot pay (an aim beyond them) stays bounded


class StepSource(Protocol):
    """What the Improviser drives: the TFLite step or windowed model on the Pi (playbach.runtime),
    the Keras step model on the desktop (playbach.trainer.step.KerasStepModel)."""

    def reset(self) -> None: ...

    def step(self, ids: np.ndarray) -> list[np.ndarray]:
        """One event's token ids (4,) in; the next event's four distributions out."""


# what steer() changes; the player's live control path sends these (device/player.py)
STEERING = ("temperature", "rhythm_temperature", "top_k", "pitch_min", "pitch_max", "density")


class Improviser:
    def __init__(self, model: StepSource, codec: Codec, rng: np.random.Generator,
                 temperature: float = DEFAULTS.temperature, top_k: int = DEFAULTS.top_k,
                 memory: RepeatMemory | None = None):
        self.model, self.codec, self.rng = model, codec, rng
        self.temperature, self.top_k = temperature, top_k
        self.rhythm_temperature = DEFAULTS.rhythm_temperature    # < 0: the same as temperature
        self.pitch_min, self.pitch_max = DEFAULTS.pitch_min, DEFAULTS.pitch_max
        self.density = DEFAULTS.density
        self.onset_debt = 0.0    # ticks the take is behind (+) or ahead of its density aim
        self.range_mask: np.ndarray | None = None                 # None: every pitch
        self.onset_values = np.asarray(codec.vocab["onset"], dtype=np.float64)
        self.memory = memory or RepeatMemory()   # without weights it only watches
        self.pending: deque[np.ndarray] = deque()
        self.probs: list[np.ndarray] | None = None
        self.sounding = Sounding(len(codec.vocab["pitch"]))
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
        low, high = changes.get("pitch_min", self.pitch_min), changes.get("pitch_max", self.pitch_max)
        mask = pitch_mask(self.codec, low, high)
        # one assignment for the mask, so a sample never sees half a change
        self.range_mask = None if mask.all() else mask
        for name, value in changes.items():
            setattr(self, name, value)
        if "density" in changes:
            self.onset_debt = 0.0

    def pitch_allowed(self) -> np.ndarray | None:
        """The pitch tokens the next sample may choose (None = all): the one place where masks on
        the pitch head are combined (the range; any further mask is ANDed here)."""
        return self.range_mask

    def unsounded_pitch(self, ids: np.ndarray, pitch_probs: np.ndarray) -> int:
        """The sampled pitch, or, if it sounds at the event's onset, one drawn again from the pitch
        head with every sounding pitch masked (and the other pitch masks). Drawing again only on a
        hit gives the masked distribution (exactly so without top-k) and leaves a seeded take's
        random stream alone where nothing sounds. Fallback: if the masks leave no pitch, the
        first draw stands and the scheduler cuts the sounding note short, as it did before."""
        sounding = self.sounding.at(self.codec.vocab["onset"][ids[0]])
        if not sounding[ids[1]]:
            return int(ids[1])
        allowed = ~sounding if self.pitch_allowed() is None else ~sounding & self.pitch_allowed()
        if not allowed.any():
            return int(ids[1])
        return sample(pitch_probs, self.rng, self.temperature, self.top_k, allowed)

    def _onset_aim(self) -> float | None:
        """The mean onset distance (ticks) the next sample aims at: the density's, corrected by
        what the take is behind or ahead (the tilt only sets each step's expectation; the model
        answers a tilted past with its own leanings, so without this a take drifts off the aim)."""
        aim = onset_mean(self.codec, self.density)
        if aim is None:
            return None
        return float(np.clip(aim + DENSITY_GAIN * self.onset_debt, self.onset_values[0], self.onset_values[-1]))

    def prime(self, events: np.ndarray) -> None:
        """Start afresh from these events (values); they are played before the model's own."""
        self.model.reset()
        self.memory.reset()
        self.sounding.reset()
        self.probs = None
        events = np.array(events, dtype=np.int64).reshape(-1, 4)
        if len(events):
            events[0, 0] = 0   # the first note starts the take (its delta was from a note not played)
        self.pending = deque(self.codec.encode(events))

    def listen(self, events: np.ndarray) -> None:
        """Set the model's state from what someone played; the next event answers it."""
        self.model.reset()
        self.memory.reset()
        self.sounding.reset()   # what someone played sounds on their instrument, not on our port
        self.pending.clear()
        for ids in self.codec.encode(events):
            self.memory.observe(ids)
            self.probs = self.model.step(ids)

    def next_event(self) -> np.ndarray:
        """The next event's values (onset delta, pitch, duration, velocity)."""
        if self.pending:
            ids = self.pending.popleft()
        elif self.probs is None:
            raise RuntimeError("Improviser.next_event before prime() or listen()")
        else:
            heads = self.memory.mix(self.probs)
            ids = sample_event(heads, self.rng, self.temperature, self.top_k,
                               self.rhythm_temperature if self.rhythm_temperature >= 0 else None,
                               self.pitch_allowed(), self.onset_values, self._onset_aim())
            self.chord = self.chord + 1 if self.codec.vocab["onset"][ids[0]] == 0 else 0
            if self.chord > MAX_CHORD:
                ids[0], self.chord = self.smallest_step, 0
            if self.density > 0:
                debt = self.onset_debt + onset_mean(self.codec, self.density) - self.onset_values[ids[0]]
                self.onset_debt = float(np.clip(debt, -DEBT_LIMIT, DEBT_LIMIT))
            ids[1] = self.unsounded_pitch(ids, heads[1])
        onset, _, duration, _ = self.codec.decode(ids)[0]
        self.sounding.add(onset, ids[1], duration)
        self.memory.observe(ids)
        self.probs = self.model.step(np.asarray(ids, dtype=np.int64))
        return self.codec.decode(ids)[0]


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
    elif wanted.isdigit() and int(wanted) < len(openings):
        i = int(wanted)
    else:
        matches = [i for i, n in enumerate(names) if wanted.lower() in n.lower()]
        if not matches:
            raise UserError(f"opening '{wanted}' is not in {bundle_path}; it has 0..{len(openings) - 1}: "
                            + ", ".join(names))
        i = matches[0]
    return names[i], np.asarray(openings[i], dtype=np.int64)
