"""device/clockreplay.py: a clock take's tick arrivals replayed through the Follower (fast tier)."""
import random

import pytest

from playbach.device.follower import PPQ
from playbach.device.clockreplay import replay


def take(stall_at: int | None, seed: int = 0) -> dict:
    """A take as the emulated Pi's clock check leaves it: 50 BPM for 16 beats then 70, every
    200th tick not sent; arrivals 2-3 ms after the sends, held by a 0.6 s stall from `stall_at`."""
    rng = random.Random(seed)
    grid, arrivals, due, last, held = [], [], 1.0, 0.0, 0.0
    for i in range(2 * 16 * PPQ):
        if i == stall_at:
            held = due + 0.6
        sent = None if (i + 1) % 200 == 0 else due + rng.uniform(-0.001, 0.001)
        grid.append((due, sent, 50 if i < 16 * PPQ else 70))
        if sent is not None:
            last = max(sent + rng.uniform(0.002, 0.003), held, last)
            arrivals.append(last)
        due += 60 / (grid[-1][2] * PPQ)
    return {"grid": grid, "start": 0, "stats": {"bpm": 90.0, "clock_arrivals": arrivals}}


def test_a_clean_take_keeps_the_count_and_a_stall_at_the_change_is_replayed_as_the_follower_takes_it():
    clean = replay(take(None))
    assert clean["ticks"] == 2 * 16 * PPQ - 3 and clean["off_at_end"] == 0, clean
    stalled = replay(take(16 * PPQ - 3))   # tests/test_clock_follow.py's stall at a tempo change
    assert stalled["off_at_end"] == 0 and stalled["slips"], stalled   # off for a while, then back


def test_a_take_without_every_arrival_is_refused():
    t = take(None)
    t["stats"]["clock_arrivals"].pop()
    with pytest.raises(SystemExit, match="764 tick arrivals for 765 ticks sent"):
        replay(t)
