"""`playbach listen BUNDLE --corpus FILE --split test --json OUT`: does a take sound like Bach?

Takes are made by the player's own path (playbach/take.py, the Improviser's loop: what the Pi
plays with the default settings), each cut after its opening into 16-quarter segments, and set
beside the corpus's held-out pieces cut the same way, measure by measure (playbach/listening.py),
with standard errors. One group of takes per `--plan` value, so planning off and on sit side by
side. Seeded: take i of a group has seed `--seed` + i and the random opening that seed draws.
No TensorFlow, no music21.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time

import numpy as np

from playbach import settings
from playbach.bundle import Bundle, load_bundle
from playbach.evaluate_bundle import encode, read_pieces
from playbach.events import FIELDS
from playbach.files import write_text_atomically
from playbach.errors import UserError
from playbach.listening import HISTOGRAMS, MEASURES, Notes, measure_piece, pooled_histograms, summarize
from playbach.take import make_improviser, open_take_model

log = logging.getLogger(__name__)
# Bach's band on each measure (JSB test): a take should land inside it, not past it either way
GOAL = {"dissonance": (0.18, 0.27), "key_changes": (0.40, 0.58), "key_clarity": (0.82, None),
        "distinct_pitches": (18.5, 23.5), "top_steps": (0.76, 0.88), "long_notes": (0.14, 0.22),
        "durations": (None, 0.10), "onset_intervals": (None, 0.10)}   # histograms: distance to Bach's


def add_arguments(parser) -> None:
    parser.add_argument("bundle", help="bundle folder (holds bundle.json)")
    parser.add_argument("--corpus", required=True, help="Jsb16thSeparated.json (or its folder)")
    parser.add_argument("--split", default="test", help="split of the corpus to compare with (default test)")
    parser.add_argument("--json", help="write the figures here (atomically)")
    parser.add_argument("--takes", type=int, default=16, help="takes per group (default 16)")
    parser.add_argument("--events", type=int, default=1000, help="events per take after its opening (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first take (default 0)")
    parser.add_argument("--plan", default=f"0,{settings.DEFAULTS.plan}",
                        help="comma-separated plan values, one group of takes each (default: off, and the default)")


def plans(text: str) -> list[int]:
    """'0,8' -> [0, 8]; a UserError naming --plan for anything else."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    key = settings.BY_NAME["plan"]
    if not values:
        raise UserError(f"--plan {text!r}: give comma-separated plan values, e.g. 0,8")
    return [key.check(v, "--plan") for v in values]


def take_measures(bundle: Bundle, plan: int, takes: int, events: int, seed: int) -> list[list[dict]]:
    """The segments' measures of `takes` takes of the player's default settings with this `plan`."""
    base = dataclasses.replace(settings.DEFAULTS, accelerator="cpu", plan=plan)
    model = open_take_model(bundle, base)
    measured = []
    for i in range(takes):
        improviser = make_improviser(bundle, model, dataclasses.replace(base, seed=seed + i))
        opening = len(improviser.pending)
        take = np.stack([improviser.next_event() for _ in range(opening + events)])
        start = int(take[:opening + 1, 0].sum())   # the first generated note's tick
        measured.append(measure_piece(Notes.of_events(take, bundle.codec.ticks_per_quarter), start))
    return measured


def in_band(figures: dict) -> dict[str, bool]:
    """Whether each measure with a goal lies inside Bach's band."""
    out = {}
    for name, (low, high) in GOAL.items():
        value = figures[name]["tv_to_bach"]["mean"] if name in HISTOGRAMS else figures[name]["mean"]
        out[name] = (low is None or value >= low) and (high is None or value <= high)
    return out


def listen(bundle: Bundle, corpus: str, split: str, groups: list[int], takes: int, events: int,
           seed: int) -> dict:
    source, pieces = read_pieces(corpus, split, bundle.codec)
    nearest = {f: 0 for f in FIELDS}
    for name, piece, _ in pieces:   # a pitch the bundle cannot play: the piece and the pitch named
        encode(bundle.codec, name, piece, nearest)
    tpq = bundle.codec.ticks_per_quarter
    bach = [measure_piece(Notes.of_events(piece, tpq)) for _, piece, _ in pieces]
    reference = pooled_histograms(bach)
    result = {"bundle": str(bundle.path), "corpus": source, "takes": takes, "events": events, "seed": seed,
              "settings": {k: getattr(settings.DEFAULTS, k) for k in ("temperature", "top_k", "max_repeat")},
              "goal": GOAL, "bach": summarize(bach, reference, seed)}
    for plan in groups:
        started = time.perf_counter()
        figures = summarize(take_measures(bundle, plan, takes, events, seed), reference, seed)
        figures["seconds"] = time.perf_counter() - started
        figures["in_band"] = in_band(figures)
        result[f"plan={plan}"] = figures
        log.info("plan=%d: %d takes in %.0f s", plan, takes, figures["seconds"])
    return result


def table(result: dict) -> str:
    """The figures side by side, mean +- standard error (Markdown)."""
    groups = [k for k in result if k == "bach" or k.startswith("plan=")]
    rows = ["| per 16-quarter segment | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    for name in (*MEASURES, *HISTOGRAMS):
        cells = []
        for g in groups:
            f = result[g][name]["tv_to_bach"] if name in HISTOGRAMS else result[g][name]
            cells.append("" if g == "bach" and name in HISTOGRAMS else f"{f['mean']:.3f} ± {f['se']:.3f}")
        label = f"{name} (TV to Bach)" if name in HISTOGRAMS else name
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run(args) -> int:
    if args.takes < 1 or args.events < 1:
        raise UserError(f"--takes {args.takes} --events {args.events}: give at least one take of one event")
    result = listen(load_bundle(args.bundle), args.corpus, args.split, plans(args.plan), args.takes,
                    args.events, args.seed)
    print(table(result))
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=1) + "\n")
        log.info("figures written to %s", args.json)
    return 0
