"""The clock take's figures, in the emulated Pi's product venv (numpy, playbach.harness):

    /opt/playbach/venv/bin/python clockmeasure.py TAKE.json [BUNDLE]   -> JSON on stdout

TAKE.json (written by clock.py): the source's grid, the index of its first tick after Start,
the note_on (time, pitch) pairs the synth received, the transport's round trips (s) and the
player's --stats (or null). The same measure as the JACK clock bench (harness/clockbench.py):
harness/clockgrid.py on the source's own grid, and the position the player meant each note for.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from playbach.bundle import load_bundle
from playbach.harness import clockgrid
from playbach.harness.clockbench import _intended

BUNDLE = sys.argv[2] if len(sys.argv) > 2 else "/opt/playbach/models/default"


def main(path: str) -> dict:
    take = json.loads(open(path).read())
    grid = [(due, sent, bpm) for due, sent, bpm in take["grid"]]
    ons = [(t, pitch) for t, pitch in take["onsets"]]
    bundle = load_bundle(BUNDLE, verify=False)
    tpq = bundle.codec.ticks_per_quarter
    stats = take.get("stats")
    intended = _intended(ons, stats, clockgrid.PPQ // tpq) if stats else None
    out = clockgrid.measure(grid, take["start"], [t for t, _ in ons], take["transport"], intended)
    # The same onsets less the transport's median round trip: where the player put each note.
    # A 16th's tick is 17.9 ms at 140 BPM, so a note more than half of that late is nearest the
    # next tick: with the emulated USB's round trip in it (several ms, a real Pi's USB about 1),
    # the raw share on a 16th says more about the rig than about the player.
    shift = float(np.median(take["transport"])) if take["transport"] else 0.0
    net = clockgrid.measure(grid, take["start"], [t - shift for t, _ in ons], [], intended)
    out["net_of_transport"] = {"shift_ms": round(shift * 1e3, 3), "on_a_16th": net["on_a_16th"],
                               "at_intended_position": net.get("at_intended_position"),
                               "onset_from_tick_ms": net["all"]["onset_from_tick_ms"],
                               "off_16th": net["off_16th"]}
    if stats:
        out["players_own"] = clockgrid.players_own(grid, take["start"], stats, clockgrid.PPQ // tpq)
    out["trace"] = trace(grid, take["start"], ons, shift, intended, stats)
    onsets = np.cumsum(np.asarray(bundle.openings[0])[:, 0])
    out["first_chord"] = int(np.sum(onsets == 0))
    out["opening_notes_in_first_0_6_quarter"] = int(np.sum(onsets < 0.6 * tpq))
    return out


def trace(grid: list, start: int, ons: list, shift: float, intended: list | None, stats: dict | None) -> dict:
    """What a failing take looked like: its first notes as (ms after the first tick, nearest
    position net of the transport, the position the player meant), and the player's tempo and
    the source's each second."""
    times = clockgrid.positions(grid, start)
    nearest, _ = clockgrid.place([t - shift for t, _ in ons], times)
    kept = clockgrid.inside([t - shift for t, _ in ons], times)
    meant = [m for m, k in zip(intended or [None] * len(ons), kept) if k]
    notes = [[round((t - shift - times[0]) * 1e3), int(p), m] for (t, _), p, m
             in zip([o for o, k in zip(ons, kept) if k], nearest, meant)]
    tempo = (stats or {}).get("clock_tempo") or []
    player, last = [], None
    for t, bpm in tempo:
        if last is None or t - last >= 1.0:
            src = next((b for (due, _, b) in grid[start:] if due >= t), None)
            player.append([round(t - times[0], 1), round(bpm, 1), src])
            last = t
    return {"first_notes": notes[:40], "player_bpm_each_second": player}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
