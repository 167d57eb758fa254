"""Steering, measured: JSON to bench/results/steer.json (what is measured: playbach/harness/steer.py,
harness/ in the repo).

    python bench/steer.py --seeds 10 --out bench/results/steer.json   # about 2-4 minutes here
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from playbach import settings
from playbach.files import write_text_atomically
from playbach.harness.steer import (FIRST_QUARTERS, KEYS, LIVE_CHANGES, LIVE_RANGE, first_quarters_key, live_key,
                                    long_take)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(settings.DEFAULT_BUNDLE))
    parser.add_argument("--minutes", type=float, default=10.0, help="music in the long take")
    parser.add_argument("--bpm", type=float, default=settings.DEFAULTS.bpm)
    parser.add_argument("--segment", type=float, default=60.0, help="seconds of music between steering changes")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per key and per live key change")
    parser.add_argument("--out", default="bench/results/steer.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    take = long_take(args.bundle, args.minutes, args.bpm, args.segment, seed=0)
    keys = [first_quarters_key(args.bundle, k, s) for k in KEYS for s in range(args.seeds)]
    rate = {name: sum(r[name] == r["key"] for r in keys) / len(keys) for name in ("krumhansl", "temperley")}
    live = [live_key(args.bundle, a, b, s) for a, b in LIVE_CHANGES for s in range(args.seeds)]
    live_rate = {name: sum(r[name] == r["to"] for r in live) / len(live) for name in ("krumhansl", "temperley")}
    result = {"bundle": args.bundle, "long_take": take,
              "key": {"first_quarters": FIRST_QUARTERS, "takes": len(keys), "rate": rate, "takes_found": keys},
              "live_key": {"first_quarters": FIRST_QUARTERS, "range": LIVE_RANGE, "takes": len(live),
                           "rate": live_rate, "in_range_rate": sum(r["in_range"] for r in live) / sum(r["notes"] for r in live),
                           "no_gap_rate": sum(r["onset_after_change_ticks"] <= r["largest_onset_otherwise_ticks"]
                                              for r in live) / len(live), "takes_found": live}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.out, json.dumps(result, indent=1))
    print(json.dumps({"generated_in_range_rate": take["generated_in_range_rate"], "key_rate": rate,
                      "live_key_rate": live_rate, "live_in_range_rate": result["live_key"]["in_range_rate"],
                      "live_no_gap_rate": result["live_key"]["no_gap_rate"],
                      "segments": [(r["density"], r["notes_per_quarter"]) for r in take["segments"]]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
