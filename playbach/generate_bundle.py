"""`playbach generate BUNDLE --out take.mid`: what the Pi would play, rendered offline. No TensorFlow.

The take is made as the player makes it (playbach/take.py: the bundle's model on the CPU, the
repeat memory, the steering, the opening moved to the key, planning) and its events are drawn by
the same Improviser loop the play loop calls, without ports or a clock: with the same settings
and seed, `playbach play --record` records the same notes. A run folder goes to the trainer's
generate (playbach/trainer/generate.py) instead.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from playbach import settings
from playbach.bundle import load_bundle
from playbach.errors import UserError
from playbach.events import events_to_notes
from playbach.grid import is_grid
from playbach.improviser import STEERING, Improviser
from playbach.midifile import write_midi
from playbach.take import make_improviser, open_take_model

log = logging.getLogger(__name__)
TAKE_SETTINGS = (*STEERING, "key", "max_repeat", "seed", "opening", "seed_midi", "variant", "bpm", "program")


def add_arguments(parser) -> None:
    parser.add_argument("bundle", help="bundle folder (holds bundle.json); a run folder goes to the trainer's generate")
    parser.add_argument("--out", required=True, help="MIDI file to write")
    parser.add_argument("--events", type=int, default=400, help="events (notes) to generate after the opening")
    # the player's own flags and defaults: the same take as `playbach play` with these settings
    settings.add_arguments(parser, TAKE_SETTINGS)


def take_settings(args) -> settings.Settings:
    """Every setting of the take: the player's defaults, then the flags given (checked)."""
    s = dataclasses.replace(settings.DEFAULTS, **settings.check_arguments(args, TAKE_SETTINGS), accelerator="cpu")
    settings.check_together(s, "flags")
    return s


def render(improviser: Improviser, events: int) -> np.ndarray:
    """The take's events: its opening as the player plays it, then `events` of the model's."""
    return np.stack([improviser.next_event() for _ in range(len(improviser.pending) + events)])


def run(args) -> int:
    if args.events < 0:
        raise UserError(f"--events {args.events}: give a number of events >= 0")
    s = take_settings(args)
    bundle = load_bundle(args.bundle)
    improviser = make_improviser(bundle, open_take_model(bundle, s), s)
    take = render(improviser, args.events)
    notes = events_to_notes(take)
    write_midi(notes, args.out, bundle.codec.ticks_per_quarter, bpm=s.bpm, program=s.program)
    planned = "" if is_grid(bundle) else f"plan {s.plan}, "
    log.info("wrote %s: %d notes (%sseed %d)", args.out, len(notes), planned, s.seed)
    return 0
