"""`playbach generate RUN --out take.mid`: continue a held-out piece's opening, write MIDI + piano roll.

The run's Keras model is rebuilt as a step model (trainer/step.py) and driven by the player's own
Improviser (playbach/improviser.py): the same repeat memory, sampler and chord guard, so a seeded
desktop take and the same seeded take from the converted float32 bundle agree event for event.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from playbach.errors import UserError
from playbach.events import Codec, events_to_notes
from playbach.improviser import Improviser, StepSource
from playbach.memory import RepeatMemory, weights_from_dict
from playbach.midifile import write_midi
from playbach.trainer.runfolder import load_run
from playbach.trainer.step import KerasStepModel

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder written by `playbach train`")
    parser.add_argument("--out", required=True, help="MIDI file to write (a .png piano roll goes beside it)")
    parser.add_argument("--events", type=int, default=400, help="events (notes) to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = always the likeliest")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--program", type=int, default=7, help="GM program (7 = clavichord)")
    parser.add_argument("--bpm", type=float, default=100.0)
    parser.add_argument("--opening", type=int, default=32, help="events of the held-out piece to start from")
    parser.add_argument("--max-repeat", type=int, default=64, help="repeat memory: longest run of events "
                        "copied from earlier in the take (0 = off; as the device's max_repeat)")
    parser.add_argument("--piece", help="which test piece opens (default: the first)")


def generate(model: StepSource, codec: Codec, opening: np.ndarray, n_events: int, rng: np.random.Generator,
             temperature: float = 1.0, top_k: int = 0, memory: RepeatMemory | None = None) -> np.ndarray:
    """Field values (n, 4): the opening (its first onset 0, as the player starts) followed by
    `n_events` events sampled by the player's own loop (the memory, if given, mixed in)."""
    improviser = Improviser(model, codec, rng, temperature, top_k, memory)
    improviser.prime(opening)
    return np.stack([improviser.next_event() for _ in range(len(opening) + n_events)])


def run(args) -> int:
    from playbach.trainer.pianoroll import save_pianoroll

    run = load_run(args.run)
    test = run.pieces.get("test", {})
    if not test:
        raise UserError(f"{run.path / 'events.npz'} has no test pieces to open with")
    name = args.piece or sorted(test)[0]
    if name not in test:
        raise UserError(f"--piece {name!r} is not a test piece of {run.path} (they are {sorted(test)})")
    opening = test[name][:max(1, args.opening)]
    rng = np.random.default_rng(args.seed)
    weights = weights_from_dict(run.meta.get("memory")) if args.max_repeat else None
    events = generate(KerasStepModel(run.config, run.model), run.codec, opening, args.events, rng,
                      args.temperature, args.top_k, RepeatMemory(weights, args.max_repeat))
    notes = events_to_notes(events)
    out = Path(args.out)
    write_midi(notes, out, run.codec.ticks_per_quarter, bpm=args.bpm, program=args.program)
    save_pianoroll(notes, out.with_suffix(".png"), run.codec.ticks_per_quarter,
                   title=f"{out.name}: {len(opening)} events of {name}, then {args.events} generated")
    log.info("wrote %s (%d notes, opening from %s) and %s", out, len(notes), name, out.with_suffix(".png"))
    return 0
