"""`playbach generate RUN --out take.mid`: continue a held-out piece's opening, write MIDI + piano roll.

The model reads the last `window` events (the length it was trained on) and each head is
sampled with the device's own sampler (temperature, top-k) after the device's repeat memory,
so a desktop take and a live take come from the same code.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from playbach.device.events import FIELDS, Codec, events_to_notes, write_midi
from playbach.device.memory import RepeatMemory, weights_from_dict
from playbach.device.sampler import sample_event
from playbach.errors import UserError
from playbach.trainer.runfolder import load_run

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


def next_event_probs(model):
    """context ids (n, 4) -> the four heads' probabilities for event n+1, compiled once for any n."""
    import tensorflow as tf

    spec = {f: tf.TensorSpec([1, None], tf.int32, name=f) for f in FIELDS}

    @tf.function(input_signature=[spec])
    def last_step(x):
        out = model(x, training=False)
        return [out[f][0, -1] for f in FIELDS]

    def probs(context: np.ndarray) -> list[np.ndarray]:
        x = {f: tf.constant(context[None, :, j], dtype=tf.int32) for j, f in enumerate(FIELDS)}
        return [p.numpy() for p in last_step(x)]

    return probs


def generate(model, codec: Codec, opening: np.ndarray, n_events: int, window: int,
             rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0,
             memory: RepeatMemory | None = None) -> np.ndarray:
    """Token ids: the opening followed by `n_events` sampled events (the memory, if given, mixed in)."""
    probs = next_event_probs(model)
    memory = memory or RepeatMemory()
    ids = [np.asarray(row) for row in codec.encode(opening)]
    for row in ids:
        memory.observe(row)
    for _ in range(n_events):
        ids.append(sample_event(memory.mix(probs(np.stack(ids[-window:]))), rng, temperature, top_k))
        memory.observe(ids[-1])
    return np.stack(ids)


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
    ids = generate(run.model, run.codec, opening, args.events, run.config.window, rng,
                   args.temperature, args.top_k, RepeatMemory(weights, args.max_repeat))
    notes = events_to_notes(run.codec.decode(ids))
    out = Path(args.out)
    write_midi(notes, out, run.codec.ticks_per_quarter, bpm=args.bpm, program=args.program)
    save_pianoroll(notes, out.with_suffix(".png"), run.codec.ticks_per_quarter,
                   title=f"{out.name}: {len(opening)} events of {name}, then {args.events} generated")
    log.info("wrote %s (%d notes, opening from %s) and %s", out, len(notes), name, out.with_suffix(".png"))
    return 0
