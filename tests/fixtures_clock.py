"""Clock takes built for the fast tier: what the emulated Pi's clock check leaves behind."""
import random

from playbach.device.follower import PPQ


def stalled_change_take(stall_at: int | None, seed: int = 0) -> dict:
    """A take as the emulated Pi's clock check leaves it (device/clockreplay.py reads it): 50 BPM
    for 16 beats then 70, every 200th tick not sent (the 15th after the change among them);
    arrivals 2-3 ms after the sends, held by a 0.6 s stall from tick `stall_at` (late, then a
    clump)."""
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
