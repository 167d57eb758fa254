"""A take made ready from a bundle and the settings: its model, its seed and its Improviser.

The player (device/player.py) plays a Take; it builds a new one whole for a restart and swaps it
in only once it is ready, so a broken bundle leaves the old take playing. `playbach generate
BUNDLE`, `playbach listen` and bench/steer.py make takes through here too, so what they render
is what the Pi would play with the same settings and seed. No port, no clock: those are the
player's.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from playbach import settings as pb_settings
from playbach.bundle import Bundle, load_bundle
from playbach.errors import UserError
from playbach.events import Codec, merge_overlaps, notes_to_events, quantize_notes
from playbach.grid import GridStep, is_grid, open_grid
from playbach.grid_improviser import GridImproviser
from playbach.improviser import STEERING, Improviser, StepSource, choose_opening
from playbach.keys import parse_key
from playbach.memory import RepeatMemory
from playbach.midifile import read_midi
from playbach.settings import Settings
from playbach.steering import fit_seed, opening_key, prefer_mode

log = logging.getLogger(__name__)

SEED_EVENTS = 32    # how much of a MIDI file seeds the model (about what a bundle opening holds)


def open_take_model(bundle: Bundle, s: Settings) -> StepSource | GridStep:
    """The bundle's model the settings ask for (accelerator, model_kind, variant; a grid bundle's
    models run on the CPU); a step model the bundle lacks falls back to its windowed model."""
    from playbach.runtime import open_model   # the TFLite interpreter: only once a take is made

    if is_grid(bundle):
        return open_grid(bundle)
    try:
        return open_model(bundle, s.accelerator, s.model_kind, s.variant)
    except UserError as e:
        if s.model_kind != "step":
            raise
        # the shipped bundle's windowed model need not be the step model's variant
        have = bundle.variants("windowed")
        variant = s.variant if s.variant in have else bundle.most_faithful_variant("windowed")
        log.warning("%s; falling back to the windowed %s model", e, variant)
        return open_model(bundle, s.accelerator, "windowed", variant)


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


def take_seed(bundle: Bundle, s: Settings, rng: np.random.Generator) -> np.ndarray:
    """The opening (or seed_midi), moved to `key` and into the pitch range. A random opening
    for a key is drawn among the openings of that key's mode, so no third or sixth is bent."""
    codec, key = bundle.codec, parse_key(s.key)
    if s.seed_midi:
        seed, origin = midi_seed(s.seed_midi, codec), s.seed_midi
    else:
        openings, names = bundle.openings, bundle.opening_names
        if key is not None and s.opening == "" and openings:
            keep = prefer_mode(openings, key.mode, codec.ticks_per_quarter)
            openings, names = [openings[i] for i in keep], [names[i] for i in keep]
        origin, seed = choose_opening(openings, names, s.opening, rng, str(bundle.path))
    moved = f", moved from {opening_key(seed)} to {key}" if key is not None and len(seed) else ""
    seed = fit_seed(seed, codec, key, s.pitch_min, s.pitch_max)
    log.info("starting from %s (%d events%s)", origin, len(seed), moved)
    return seed


def make_improviser(bundle: Bundle, model: StepSource | GridStep, s: Settings) -> Improviser | GridImproviser:
    """The Improviser of a take: seeded by `seed`, with the repeat memory and the steering of `s`
    (a pitch range the bundle cannot reach is a UserError naming the bundle), primed with the
    take's seed and, if `key` is set, settling there."""
    rng = np.random.default_rng(None if s.seed < 0 else s.seed)
    if is_grid(bundle):   # a grid model plays alone: its own distribution is what sounds like Bach
        improviser = GridImproviser(model, bundle.codec, rng, s.temperature, s.top_k)
    else:
        memory = RepeatMemory(bundle.memory if s.max_repeat else None, s.max_repeat)
        if s.max_repeat and bundle.memory is None:
            log.info("the bundle has no repeat-memory weights: the model plays alone")
        improviser = Improviser(model, bundle.codec, rng, s.temperature, s.top_k, memory)
    try:
        improviser.steer(**{k: getattr(s, k) for k in STEERING})
    except UserError as e:
        raise UserError(f"{bundle.path}: {e}") from e
    improviser.prime(take_seed(bundle, s, rng))
    if s.key:   # the seed is in the key already; what the model adds first settles in it too
        improviser.set_key(parse_key(s.key))
    return improviser


@dataclass
class Take:
    """One take: its settings (a new value for each live change), bundle, model and Improviser.
    Built whole by build(); the player swaps a new one in for a restart."""
    settings: Settings
    bundle: Bundle
    model: StepSource | GridStep
    improviser: Improviser | GridImproviser

    @classmethod
    def build(cls, s: Settings) -> Take:
        """The bundle, its model and the Improviser, primed with the seed: a take ready to play
        (steering checked against the bundle: a UserError before any port opens)."""
        bundle = load_bundle(s.bundle)
        model = open_take_model(bundle, s)
        model.step(np.zeros(4, dtype=np.int64))   # the first invoke is slow: pay it before the clock starts
        model.reset()
        return cls(s, bundle, model, make_improviser(bundle, model, s))

    @property
    def ticks_per_quarter(self) -> int:
        return self.bundle.codec.ticks_per_quarter

    def next_event(self, until: float | None = None) -> tuple[int, int, int, int] | None:
        """The next event: onset distance (ticks), pitch, duration (ticks), velocity; None if
        planning yielded at `until` (Improviser.next_event)."""
        event = self.improviser.next_event(until)
        if event is None:
            return None
        onset, pitch, duration, velocity = event.tolist()
        return onset, pitch, duration, velocity

    def apply(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change live settings from the next event on: each value checked by its setting's rules,
        all or none applied (a UserError naming the key otherwise). The tempo is only recorded
        here: the player's scheduler keeps time. Returns the live values now in force."""
        checked = pb_settings.check_live(changes, self.settings)
        steer = {k: v for k, v in checked.items() if k in STEERING}
        if steer:
            self.improviser.steer(**steer)     # refuses a range the model cannot play, changing nothing
        if "key" in checked:                   # what follows moves there (never refuses)
            self.improviser.set_key(parse_key(checked["key"]))
        self.settings = dataclasses.replace(self.settings, **checked)
        return self.in_force()

    def in_force(self) -> dict[str, Any]:
        """The live settings the take plays with now."""
        return {name: getattr(self.settings, name) for name in pb_settings.LIVE}

    def status(self, bpm: float) -> str:
        """One line for the journal and the control page: model, tempo and the steering in force."""
        s = self.settings
        steering = "".join([f", key {parse_key(s.key)}" if s.key else "",
                            f", rhythm temperature {s.rhythm_temperature:.2f}" if s.rhythm_temperature >= 0 else "",
                            f", pitches {s.pitch_min}-{s.pitch_max}" if self.improviser.live_key.range_mask is not None else "",
                            f", density {s.density:g}/quarter" if s.density > 0 else ""])
        return f"{self.model.name} on {self.model.backend}, {bpm:g} BPM, temperature {s.temperature:.2f}{steering}"
