"""How much of a take repeats itself, with and without the repeat memory (README, "The repeat memory").

Generates takes offline with the player's own Improviser and runtime (no MIDI, no clock) and
counts, per take, the share of events that lie inside a run of >= MIN_RUN events which already
occurred earlier in the take, the longest such run, and the run at the last event (a take that
loops ends inside an ever-growing run).

    python bench/take_repeats.py models/default --out bench/results/take_repeats.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from playbach.bundle import load_bundle
from playbach.improviser import Improviser
from playbach.memory import MIN_RUN, RepeatMemory, take_repeat_figures
from playbach.runtime import open_model
from playbach.files import write_text_atomically

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-repeat", type=int, nargs="+", default=[0, 64, 256])
    parser.add_argument("--variant", default="dynamic")
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    model = open_model(bundle, "cpu", "step", args.variant)
    rows = []
    for max_repeat in args.max_repeat:
        for seed in args.seeds:
            memory = RepeatMemory(bundle.memory if max_repeat else None, max_repeat)
            improviser = Improviser(model, bundle.codec, np.random.default_rng(seed), args.temperature, 0, memory)
            improviser.prime(bundle.openings[seed % len(bundle.openings)])
            events = np.array([improviser.next_event() for _ in range(args.events)])
            rows.append({"max_repeat": max_repeat, "seed": seed, **take_repeat_figures(events)})
            r = rows[-1]
            print(f"max_repeat {max_repeat:4d} seed {seed}: {100 * r['share_in_repeats']:5.1f} % of events in "
                  f"repeats of >= {MIN_RUN}, longest {r['longest_repeat']}, run at the end {r['run_at_end']}")
    if args.out:
        write_text_atomically(Path(args.out), json.dumps(
            {"bundle": args.bundle, "variant": args.variant, "events": args.events,
             "temperature": args.temperature, "min_run": MIN_RUN, "takes": rows}, indent=1))


if __name__ == "__main__":
    main()
