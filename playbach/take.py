"""A take made ready from a bundle and the settings: its model, its seed and its Improviser.

The player (device/player.py) plays what this makes; `playbach generate BUNDLE` and
`playbach listen` make takes through it too, so what they render is what the Pi would play
with the same settings and seed. No port, no clock: those are the player's.
"""
from __future__ import annotations

import logging

import numpy as np

from playbach.bundle import Bundle
from playbach.errors import UserError
from playbach.improviser import STEERING, Improviser, choose_opening, midi_seed
from playbach.keys import parse_key
from playbach.memory import RepeatMemory
from playbach.steering import fit_seed, opening_key, prefer_mode

log = logging.getLogger(__name__)


def open_take_model(bundle: Bundle, s: dict):
    """The bundle's model the settings ask for (accelerator, model_kind, variant); a step model
    the bundle lacks falls back to its windowed model."""
    from playbach.runtime import open_model   # the TFLite interpreter: only once a take is made

    try:
        return open_model(bundle, s["accelerator"], s["model_kind"], s["variant"])
    except UserError as e:
        if s["model_kind"] != "step":
            raise
        # the shipped bundle's windowed model need not be the step model's variant
        have = bundle.variants("windowed")
        variant = s["variant"] if s["variant"] in have else bundle.most_faithful_variant("windowed")
        log.warning("%s; falling back to the windowed %s model", e, variant)
        return open_model(bundle, s["accelerator"], "windowed", variant)


def take_seed(bundle: Bundle, s: dict, rng: np.random.Generator) -> np.ndarray:
    """The opening (or seed_midi), moved to `key` and into the pitch range. A random opening
    for a key is drawn among the openings of that key's mode, so no third or sixth is bent."""
    codec, key = bundle.codec, parse_key(s["key"])
    if s["seed_midi"]:
        seed, origin = midi_seed(s["seed_midi"], codec), s["seed_midi"]
    else:
        openings, names = bundle.openings, bundle.opening_names
        if key is not None and s["opening"] == "" and openings:
            keep = prefer_mode(openings, key.mode)
            openings, names = [openings[i] for i in keep], [names[i] for i in keep]
        origin, seed = choose_opening(openings, names, s["opening"], rng, str(bundle.path))
    moved = f", moved from {opening_key(seed)} to {key}" if key is not None and len(seed) else ""
    seed = fit_seed(seed, codec, key, s["pitch_min"], s["pitch_max"])
    log.info("starting from %s (%d events%s)", origin, len(seed), moved)
    return seed


def make_improviser(bundle: Bundle, model, s: dict) -> Improviser:
    """The Improviser of a take: seeded by `seed`, with the repeat memory and the steering of `s`
    (a pitch range the bundle cannot reach is a UserError naming the bundle), primed with the
    take's seed and, if `key` is set, settling there."""
    rng = np.random.default_rng(None if s["seed"] < 0 else s["seed"])
    memory = RepeatMemory(bundle.memory if s["max_repeat"] else None, s["max_repeat"])
    if s["max_repeat"] and bundle.memory is None:
        log.info("the bundle has no repeat-memory weights: the model plays alone")
    improviser = Improviser(model, bundle.codec, rng, s["temperature"], s["top_k"], memory)
    try:
        improviser.steer(**{k: s[k] for k in STEERING})
    except UserError as e:
        raise UserError(f"{bundle.path}: {e}") from e
    improviser.prime(take_seed(bundle, s, rng))
    if s["key"]:   # the seed is in the key already; what the model adds first settles in it too
        improviser.set_key(parse_key(s["key"]))
    return improviser
