"""A clock take replayed through the Follower: did its count keep the source's?

    python -m playbach.device.clockreplay TAKE.json   -> JSON on stdout

TAKE.json is what the emulated Pi's clock check leaves (scripts/pivm/clock.py, copied out to
.cache/pi-vm/run-SUITE/guest/clock-take.json): the source's grid (due, sent or None, bpm per
tick) and the player's --stats, whose `clock_arrivals` hold every tick's arrival as the player
took it, refused ones too. Ticks arrive in the order they were sent, so the k-th arrival is the
k-th tick sent; fed to a fresh Follower at those times, its song position less the source's count
tells where the count slipped and whether it came back, for the follower as it is now (a change
to device/follower.py tried on a take that failed, without booting anything).
"""
from __future__ import annotations

import json
import sys

from playbach.device.follower import START, TICK, Follower


def replay(take: dict) -> dict:
    grid, stats = take["grid"], take["stats"] or {}
    arrivals = stats.get("clock_arrivals") or []
    sent = [i for i, (_, when, _) in enumerate(grid[take["start"]:]) if when is not None]
    if not arrivals or len(arrivals) != len(sent):
        raise SystemExit(f"{len(arrivals)} tick arrivals for {len(sent)} ticks sent: not a take to replay "
                         "(its player's --stats kept no clock_arrivals, or ticks were lost on the way)")
    follower = Follower(stats.get("bpm", 120.0))
    follower.feed([START], arrivals[0] - 0.05)
    off, slips = [], []
    for position, t in zip(sent, arrivals):
        follower.feed([TICK], t)
        off.append(follower.song_position(follower.count) - position)
        if len(off) > 1 and off[-1] != off[-2]:
            slips.append([position, round(t, 4), off[-2], off[-1]])
    return {"ticks": len(off), "off_at_end": off[-1], "ticks_off": sum(x != 0 for x in off),
            "slips": slips[:50]}


if __name__ == "__main__":
    print(json.dumps(replay(json.loads(open(sys.argv[1]).read()))))
