"""`playbach generate RUN --out take.mid`: continue a held-out piece's opening, write MIDI + piano roll.

The run's Keras model is rebuilt as a step model (trainer/step.py) and driven by the player's own
Improviser (playbach/improviser.py): the same repeat memory, sampler and chord guard, so a seeded
desktop take and the same seeded take from the converted float32 bundle agree event for event
(planning included: the Keras step model saves and restores its state as the TFLite one does).
`playbach generate BUNDLE` (a folder holding bundle.json) is the core's playbach/generate_bundle.py.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from playbach import settings
from playbach.errors import UserError
from playbach.events import Codec, events_to_notes
from playbach.improviser import Improviser, StepSource
from playbach.memory import RepeatMemory, weights_from_dict
from playbach.midifile import write_midi
from playbach.trainer.runfolder import load_run
from playbach.trainer.step import KerasStepModel

log = logging.getLogger(__name__)
SHARED_SETTINGS = ("temperature", "top_k", "max_repeat", "seed", "program", "bpm")


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder written by `playbach train`")
    parser.add_argument("--out", required=True, help="MIDI file to write (a .png piano roll goes beside it)")
    parser.add_argument("--events", type=int, default=400, help="events (notes) to generate")
    parser.add_argument("--opening", type=int, default=32, help="events of the held-out piece to start from")
    # the player's own flags and defaults, so a desktop take and a live one sound alike
    settings.add_arguments(parser, SHARED_SETTINGS)
    parser.add_argument("--piece", help="which test piece opens (default: the first)")


def generate(model: StepSource, codec: Codec, opening: np.ndarray, n_events: int, rng: np.random.Generator,
             temperature: float = settings.DEFAULTS.temperature, top_k: int = settings.DEFAULTS.top_k,
             memory: RepeatMemory | None = None) -> np.ndarray:
    """Field values (n, 4): the opening (its first onset 0, as the player starts) followed by
    `n_events` events sampled by the player's own loop (the memory, if given, mixed in)."""
    improviser = Improviser(model, codec, rng, temperature, top_k, memory)
    improviser.prime(opening)
    return np.stack([improviser.next_event() for _ in range(len(opening) + n_events)])


def run(args) -> int:
    from playbach.trainer.pianoroll import save_pianoroll

    settings.check_arguments(args, SHARED_SETTINGS)
    run = load_run(args.run)
    test = run.pieces.get("test", {})
    if not test:
        raise UserError(f"{run.path / 'events.npz'} has no test pieces to open with")
    name = args.piece or sorted(test)[0]
    if name not in test:
        raise UserError(f"--piece {name!r} is not a test piece of {run.path} (they are {sorted(test)})")
    opening = test[name][:max(1, args.opening)]
    rng = np.random.default_rng(None if args.seed < 0 else args.seed)
    weights = weights_from_dict(run.meta.get("memory")) if args.max_repeat else None
    events = generate(KerasStepModel(run.config, run.model, run.codec), run.codec, opening, args.events, rng,
                      args.temperature, args.top_k, RepeatMemory(weights, args.max_repeat))
    notes = events_to_notes(events)
    out = Path(args.out)
    write_midi(notes, out, run.codec.ticks_per_quarter, bpm=args.bpm, program=args.program)
    save_pianoroll(notes, out.with_suffix(".png"), run.codec.ticks_per_quarter,
                   title=f"{out.name}: {len(opening)} events of {name}, then {args.events} generated")
    log.info("wrote %s (%d notes, opening from %s) and %s", out, len(notes), name, out.with_suffix(".png"))
    return 0
