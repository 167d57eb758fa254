"""What planning costs the music live (issue 25 item 6), measured in one run.

The live bench (harness/livebench.py: a private JACK server, a stamping receiver, `playbach play`
as the service runs it, onset error net of the transport's own latency) plays the same seeded
take with planning off and on, alternating, `--rounds` times each, so a busy moment of a shared
machine falls on both. Per run: the onset error beyond the transport, how late the player's own
loop sent each note_on (sent_after_due_ms; notes_sent_late: over SENT_LATE), the notes received,
CPU and memory (RSS without the JACK server's shared memory every client maps).

    python bench/plan_live.py --seconds 45 --rounds 2 --out bench/results/plan_live.json
"""
from __future__ import annotations

import argparse
import json
import logging
import platform

import numpy as np

from playbach.files import write_text_atomically
from playbach.harness.livebench import SENT_LATE, run_live_bench
from playbach.settings import DEFAULTS

def summary(runs: list[dict]) -> dict:
    """A plan's runs together: the worst run on each figure, and the onset p99 also as the mean of
    the runs (each run's lands where JACK's 2.7 ms period happens to fall against the player's
    clock, so one run's p99 moves by a millisecond or more from that alone)."""
    beyond = [r["onset_beyond_transport_ms"]["p99"] for r in runs]
    return {"onset_beyond_transport_p99_ms": max(beyond),
            "onset_beyond_transport_p99_ms_mean": round(float(np.mean(beyond)), 3),
            "sent_after_due_p99_ms": max(r["sent_after_due_ms"]["p99"] for r in runs),
            "sent_after_due_max_ms": max(r["sent_after_due_ms"]["max"] for r in runs),
            "notes_sent_late": sum(r["notes_sent_late"] for r in runs),
            "notes": sum(r["notes"] for r in runs),
            "notes_missing": sum(r["notes"] - r["notes_matched"] for r in runs),
            "rss_without_jack_shm_mb": max(r["rss_without_jack_shm_mb"] for r in runs),
            "cpu_percent": round(float(np.mean([r["cpu_percent"] for r in runs])), 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="models/default")
    p.add_argument("--seconds", type=float, default=45)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--plan", type=int, default=DEFAULTS.plan, help="the planned runs' plan (default the player's)")
    p.add_argument("--out", default="bench/results/plan_live.json")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    runs: dict[int, list[dict]] = {0: [], a.plan: []}
    for _ in range(a.rounds):
        for plan in runs:
            r = run_live_bench(a.bundle, a.seconds, variant=DEFAULTS.variant, extra_args=("--plan", str(plan)))
            runs[plan].append(r)
    result = {"benchmark": "plan_live", "bundle": a.bundle, "seconds": a.seconds, "rounds": a.rounds,
              "sent_late_ms": SENT_LATE * 1e3,
              "machine": {"processor": platform.machine(), "python": platform.python_version()},
              "runs": {f"plan={k}": v for k, v in runs.items()},
              "summary": {f"plan={k}": summary(v) for k, v in runs.items()}}
    s0, s1 = result["summary"]["plan=0"], result["summary"][f"plan={a.plan}"]
    # what planning adds: to when the player's loop sends a note (its own clock, no JACK period in
    # it), and to the onset heard beyond the transport (the runs' mean)
    result["planning_costs_ms"] = {k: round(s1[k] - s0[k], 3) for k in
                                   ("sent_after_due_p99_ms", "onset_beyond_transport_p99_ms_mean")}
    write_text_atomically(a.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1), "\nplanning on - off:", result["planning_costs_ms"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
