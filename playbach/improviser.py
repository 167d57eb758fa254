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

SEED_EVENTS = 32    # how much of a MIDI file seeds the model (about what a bundle opening holds)
MAX_CHORD = 12      # a model stuck on onset 0 would stack notes forever without time passing


class StepSource(Protocol):
    """What the Improviser drives: the TFLite step or windowed model on the Pi (playbach.runtime),
    the Keras step model on the desktop (playbach.trainer.step.KerasStepModel)."""

    def reset(self) -> None: ...

    def step(self, ids: np.ndarray) -> list[np.ndarray]:
        """One event's token ids (4,) in; the next event's four distributions out."""


class Improviser:
    def __init__(self, model: StepSource, codec: Codec, rng: np.random.Generator,
                 temperature: float = DEFAULTS.temperature, top_k: int = DEFAULTS.top_k,
                 memory: RepeatMemory | None = None):
        self.model, self.codec, self.rng = model, codec, rng
        self.temperature, self.top_k = temperature, top_k
        self.memory = memory or RepeatMemory()   # without weights it only watches
        self.pending: deque[np.ndarray] = deque()
        self.probs: list[np.ndarray] | None = None
        self.sounding = Sounding(len(codec.vocab["pitch"]))
        self.chord = 0
        onsets = codec.vocab["onset"]
        self.smallest_step = next((i for i, v in enumerate(onsets) if v > 0), 0)

    def unsounded_pitch(self, ids: np.ndarray, pitch_probs: np.ndarray) -> int:
        """The sampled pitch, or, if it sounds at the event's onset, one drawn again from the pitch
        head with every sounding pitch masked. Drawing again only on a hit gives the masked
        distribution (exactly so without top-k) and leaves a seeded take's random stream alone
        where nothing sounds. Fallback: if the mask leaves no pitch, the first draw stands and
        the scheduler cuts the sounding note short, as it did before."""
        sounding = self.sounding.at(self.codec.vocab["onset"][ids[0]])
        if not sounding[ids[1]]:
            return int(ids[1])
        allowed = ~sounding
        if not allowed.any():
            return int(ids[1])
        return sample(pitch_probs, self.rng, self.temperature, self.top_k, allowed)

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
            ids = sample_event(heads, self.rng, self.temperature, self.top_k)
            self.chord = self.chord + 1 if self.codec.vocab["onset"][ids[0]] == 0 else 0
            if self.chord > MAX_CHORD:
                ids[0], self.chord = self.smallest_step, 0
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
