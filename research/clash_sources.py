"""Where do a take's clashes come from? Dissonant pairs at eighth-note points, by how they began.

At each eighth-note point where something sounds (on the beat and off it apart), a pair of
sounding pitches a minor 2nd, tritone or major 7th apart (mod 12, as playbach/listening.py counts
dissonance) is one of: both struck at this point, one struck here against one held from before,
or both held from before. A point counts once per kind it has. Takes are made as `playbach
listen` makes them (playbach/take.py, the player's default settings); Bach is the JSB test split.

    .venv/bin/python research/clash_sources.py --out bench/results/clash_sources.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter

import numpy as np

from playbach import settings
from playbach.bundle import load_bundle
from playbach.evaluate_bundle import read_pieces
from playbach.files import write_text_atomically
from playbach.listening import DISSONANT, Notes
from playbach.take import make_improviser, open_take_model

JSB = "../shared/corpus/jsb-chorales/Jsb16thSeparated.json"
KINDS = ("both_struck", "struck_against_held", "both_held")


def count_clashes(notes: Notes, lo: int, hi: int, counts: Counter) -> None:
    for t in range(lo, hi, notes.tpq // 2):
        sounding = np.flatnonzero((notes.starts <= t) & (t < notes.starts + notes.durations))
        if not len(sounding):
            continue
        where = "beat" if t % notes.tpq == 0 else "off_beat"
        counts[where, "points"] += 1
        kinds = set()
        for a, i in enumerate(sounding):
            for j in sounding[a + 1:]:
                if abs(int(notes.pitches[i]) - int(notes.pitches[j])) % 12 in DISSONANT:
                    struck = int(notes.starts[i] == t) + int(notes.starts[j] == t)
                    kinds.add(KINDS[2 - struck])
        counts[where, "dissonant"] += bool(kinds)
        for kind in kinds:
            counts[where, kind] += 1


def shares(counts: Counter) -> dict:
    return {where: {k: counts[where, k] / counts[where, "points"] for k in ("dissonant", *KINDS)}
            for where in ("beat", "off_beat")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="models/default")
    ap.add_argument("--takes", type=int, default=8)
    ap.add_argument("--events", type=int, default=600)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    tpq = bundle.codec.ticks_per_quarter
    bach, takes = Counter(), Counter()
    for _, events, _ in read_pieces(JSB, "test", bundle.codec)[1]:
        notes = Notes.of_events(events, tpq)
        count_clashes(notes, 0, int(notes.starts.max()), bach)
    base = dataclasses.replace(settings.DEFAULTS, accelerator="cpu")
    model = open_take_model(bundle, base)
    for i in range(args.takes):
        improviser = make_improviser(bundle, model, dataclasses.replace(base, seed=args.seed + i))
        lead = len(improviser.pending)
        take = np.stack([improviser.next_event() for _ in range(lead + args.events)])
        notes = Notes.of_events(take, tpq)
        count_clashes(notes, int(take[:lead + 1, 0].sum()), int(notes.starts.max()), takes)
    result = {"what": "research/clash_sources.py: dissonant eighth-note points by how their notes began",
              "args": vars(args), "plan": base.plan, "bach": shares(bach), "takes": shares(takes)}
    write_text_atomically(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
