"""Onsets against a clock source's own grid: what a drummer hears of a player following its clock.

Numbers in, numbers out (no ports), so any rig that sends a MIDI clock and hears the notes can
use it: the JACK clock bench (harness/clockbench.py) and a rig over real USB alike.

The grid is the source's, not the player's: one entry per tick the source counted, in order, as
(when it was due, when it was sent or None for a tick it did not send, its tempo). The song
position of tick i is i - start, where `start` is the index of the first tick after Start; a
position's time is where the source sent that tick (its due time if it never did). Each onset is
placed on the nearest position; it is on a 16th when that position is a multiple of 6 (24 ticks
a quarter), and its error is its distance from that position's time.
"""
from __future__ import annotations

import numpy as np

from playbach.harness.livebench import _ms as ms, sent_after_due

PPQ = 24
SIXTEENTH = PPQ // 4


def positions(grid: list[tuple[float, float | None, float]], start: int) -> np.ndarray:
    """Time of song position 0, 1, ... on the source's grid (sent time, else due time)."""
    return np.array([due if sent is None else sent for due, sent, _ in grid[start:]], dtype=np.float64)


def inside(onsets: list[float], times: np.ndarray) -> np.ndarray:
    """Which onsets fall within the grid (50 ms either side of it)."""
    t = np.asarray(onsets, dtype=np.float64)
    return (t >= times[0] - 0.05) & (t <= times[-1] + 0.05)


def place(onsets: list[float], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest position, onset minus that position's time) per onset inside the grid."""
    t = np.asarray(onsets, dtype=np.float64)[inside(onsets, times)]
    i = np.clip(np.searchsorted(times, t), 1, len(times) - 1)
    nearest = np.where(t - times[i - 1] <= times[i] - t, i - 1, i)
    return nearest, t - times[nearest]


def beyond(stats: dict, transport: dict) -> dict:
    """An onset figure net of the transport's own latency, statistic by statistic."""
    if not stats.get("n") or not transport.get("n"):
        return {}
    return {k: round(stats[k] - transport[k], 3) for k in ("median", "p99")}


def phases(grid: list[tuple[float, float | None, float]], start: int) -> dict[str, np.ndarray]:
    """Position masks of the parts a drummer listens to: the first 4 beats, the beat after each
    tempo change, the beat after each tick the source did not send, and the rest (settled)."""
    n = len(grid) - start
    bpm = np.array([b for _, _, b in grid[start:]])
    lost = np.array([sent is None for _, sent, _ in grid[start:]])
    pos = np.arange(n)
    first = pos < 4 * PPQ
    change = np.zeros(n, bool)
    for c in np.flatnonzero(np.diff(bpm)) + 1:
        change |= (pos >= c) & (pos < c + PPQ)
    after_lost = np.zeros(n, bool)
    for c in np.flatnonzero(lost):
        after_lost |= (pos > c) & (pos <= c + PPQ)
    return {"first_4_beats": first, "beat_after_tempo_change": change, "beat_after_lost_tick": after_lost,
            "settled": ~(first | change)}


def measure(grid: list[tuple[float, float | None, float]], start: int, onsets: list[float],
            transport: list[float], intended: list[int | None] | None = None) -> dict:
    """The drummer's figures for one take: `onsets` the received note_on times, `transport` the
    rig's own one-hop latencies (s), `intended` the song position (clock ticks) each onset was
    meant for by the player, where known (None where not matched)."""
    times = positions(grid, start)
    nearest, error = place(onsets, times)
    t_trans = ms(transport)
    out = {"notes": int(len(nearest)),
           "on_a_16th": round(float(np.mean(nearest % SIXTEENTH == 0)), 4) if len(nearest) else None,
           "off_16th": [[int(p), round(float(e) * 1e3, 2)] for p, e in zip(nearest, error) if p % SIXTEENTH][:20],
           "ticks_counted": len(times), "ticks_not_sent": sum(sent is None for _, sent, _ in grid[start:]),
           "transport_ms": t_trans}
    if intended is not None:
        wanted = [w for w, k in zip(intended, inside(onsets, times)) if k]
        pairs = [(p, w) for p, w in zip(nearest, wanted) if w is not None]
        out["at_intended_position"] = round(float(np.mean([p == w for p, w in pairs])), 4) if pairs else None
    for name, mask in {"all": np.ones(len(times), bool), **phases(grid, start)}.items():
        e = error[mask[nearest]] if len(nearest) else error
        out[name] = {"onset_from_tick_ms": ms(e), "beyond_transport_ms": beyond(ms(e), t_trans)}
    quarter = 60.0 / grid[start][2]
    out["notes_in_first_0_6_quarter"] = int(np.sum(np.asarray(onsets) < times[0] + 0.6 * quarter))
    return out


def players_own(grid: list[tuple[float, float | None, float]], start: int, stats: dict, ticks_per_step: int) -> dict:
    """Where the player's --stats say it put each note against the source's grid: its due time
    (where the follower's line put the note's song position) and how late after it the note_on
    went out (the loop's own lateness). Split from the onsets heard, this tells a follower off the
    grid from a player or a transport that is late after it."""
    due = [t for t, _ in stats["note_ons"]]
    line = measure(grid, start, due, [], [k * ticks_per_step for k in stats["note_ticks"]])
    late = sent_after_due(stats)
    return {"due_on_a_16th": line["on_a_16th"], "due_at_intended_position": line.get("at_intended_position"),
            "due_from_tick_ms": line["all"]["onset_from_tick_ms"], "sent_after_due_ms": ms(late) if late else None}
