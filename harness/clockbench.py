"""The rig benchmark: `playbach play` following a real JACK MIDI clock, sending one, and under a
flood on its input; JSON out (atomically), as `python -m playbach.harness.clockbench BUNDLE`.

follow  Listens as the drummer does. A clock source of our own (harness/rig.py) sends Start, then
        24 ticks a quarter with ±1 ms uniform jitter, every 200th tick not sent at all, then Stop:
        one take at 100 -> 140 -> 90 BPM (16 beats each), one steady 5-minute take at 120 BPM,
        each with a fresh player (--opening 0). Every note_on at the receiver is placed on the
        source's own grid (its ticks counted where it sends them, the unsent ones included;
        harness/clockgrid.py): on a 16th or not, at the position the player meant (its --stats)
        or not, its distance from that tick's send time, and the same net of the transport's own
        latency (a probe straight to the receiver, as the live bench); per part of the take (the
        first 4 beats, the beat after a tempo change, the beat after a lost tick, the rest), and
        the notes in the first 0.6 quarter against the opening's first chord.
send    The player sends its clock at 120 BPM to a receiver that keeps clock messages: the tick
        intervals' error and each tick's distance from the fitted even grid, at the receiver
        (JACK quantizes to its period: the bench runs this part at a 32-frame period) and as the
        player sent them (its --stats).
flood   The same seeded take twice into a receiver, internal clock, input port on a flood client:
        once quiet, once with 20,000 messages a second for 10 s; onset error (received - scheduled)
        of each run, notes during the flood, and the player's RSS before, during and after.
Every player runs as the service does with SCHED_FIFO 20 (--realtime-priority 20).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from playbach.bundle import load_bundle
from playbach.files import write_text_atomically
from playbach.harness import clockgrid, jack
from playbach.harness.livebench import Probe, _cpu_seconds, _match, _ms, _rss_kb, _transport
from playbach.harness.rig import PPQ, ClockSource, Flood

log = logging.getLogger(__name__)
PRIORITY = 20


def _player(bundle, tmp: Path, *args) -> tuple[subprocess.Popen, Path]:
    stats = tmp / f"stats-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "playbach.cli", "play", "--bundle", str(bundle), "--midi-api", "jack",
           "--seed", "0", "--accelerator", "cpu", "--stats", str(stats), "--realtime-priority", str(PRIORITY),
           "--retry-seconds", "0.1", "--log-level", "info", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), stats


def _finish(proc: subprocess.Popen, stats: Path) -> dict:
    out, _ = proc.communicate(timeout=60)
    if proc.returncode != 0 or not stats.exists():
        raise RuntimeError(f"player failed ({proc.returncode}):\n{out[-3000:]}")
    return json.loads(stats.read_text())


def _wait_port(part: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not any(part in p for p in jack.jack_ports() + _outputs()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no JACK port {part}")
        time.sleep(0.05)


def _outputs() -> list[str]:
    import rtmidi
    probe = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="playbach-probe-in")
    try:
        return probe.get_ports()
    finally:
        probe.delete()


TEMPO_RUN = (100, 140, 90)   # BPM, BEATS_EACH beats each
BEATS_EACH = 16
STEADY_BPM = 120


def follow(bundle, tmp: Path, period: int = 64, jitter: float = 0.001, lost_every: int = 200,
           steady_seconds: float = 300) -> dict:
    tempo_run = [("msg", [0xFA])] + [("ticks", bpm, PPQ * BEATS_EACH) for bpm in TEMPO_RUN] + [("msg", [0xFC])]
    steady = [("msg", [0xFA]), ("ticks", STEADY_BPM, round(PPQ * STEADY_BPM * steady_seconds / 60)), ("msg", [0xFC])]
    with jack.JackServer(f"playbach-clockf-{os.getpid()}", tmp, period=period):
        takes = {name: _take(bundle, tmp, script, jitter, lost_every)
                 for name, script in (("tempo_run", tempo_run), ("steady", steady))}
    opening = load_bundle(bundle).openings[0]
    tpq = load_bundle(bundle).codec.ticks_per_quarter
    onsets = np.cumsum(np.asarray(opening)[:, 0])
    return {"jack_period_ms": round(period / 48, 3), "jitter_ms": jitter * 1e3, "lost_every": lost_every,
            "tempo_run_bpm": TEMPO_RUN, "beats_each": BEATS_EACH, "steady_bpm": STEADY_BPM,
            "steady_seconds": steady_seconds,
            "opening": {"index": 0, "first_chord": int(np.sum(onsets == 0)),
                        "notes_in_first_0_6_quarter": int(np.sum(onsets < 0.6 * tpq))},
            "summary": {"on_a_16th": min(t["on_a_16th"] for t in takes.values()),
                        "at_intended_position": min(t["at_intended_position"] for t in takes.values()),
                        "p99_beyond_transport_ms": max(t["all"]["beyond_transport_ms"]["p99"] for t in takes.values()),
                        "notes_in_first_0_6_quarter": {k: t["notes_in_first_0_6_quarter"] for k, t in takes.items()},
                        "player_cpu_share": {k: t["player_cpu_share"] for k, t in takes.items()}},
            **takes}


def _take(bundle, tmp: Path, script: list, jitter: float, lost_every: int) -> dict:
    """A fresh player following a clock source of our own (Start, the script, Stop) into the
    receiver; its onsets against the source's grid (harness/clockgrid.py)."""
    load = os.getloadavg()
    receiver = jack.Receiver(client=f"playbach-bench-{time.monotonic_ns()}")
    source = ClockSource(client=f"drum-{time.monotonic_ns()}")   # not a name the player's port contains
    seconds = sum(step[2] * 60 / (step[1] * PPQ) for step in script if step[0] == "ticks")
    proc, stats_path = _player(bundle, tmp, "--clock", "follow", "--clock-port", source.name.split(":")[0],
                               "--port", receiver.name, "--seconds", round(seconds + 10), "--opening", "0")
    _wait_port("playbach-clock")   # the player's clock input is there
    time.sleep(1.0)
    probe = Probe(receiver.name)
    time.sleep(0.5)   # the probe's connection is made: its first message is not lost (pairs stay in order)
    probe.thread.start()
    cpu_at_start, started = _cpu_seconds(proc.pid), time.monotonic()
    source.run(script, jitter=jitter, drop_every=lost_every)
    source.wait()
    cpu_share = (_cpu_seconds(proc.pid) - cpu_at_start) / (time.monotonic() - started)
    time.sleep(0.3)
    probe.stop()
    proc.terminate()
    stats = _finish(proc, stats_path)
    messages = receiver.taken()
    receiver.close()
    source.close()
    start = next(i for m, i in source.marks if m == [0xFA])
    ons = [(t, m[1]) for t, m in messages if m[0] & 0xF0 == 0x90 and m[2] > 0]
    tpq = load_bundle(bundle).codec.ticks_per_quarter
    intended = _intended(ons, stats, PPQ // tpq)
    result = clockgrid.measure(source.grid, start, [t for t, _ in ons], _transport(probe, messages), intended)
    result["tempo"] = _tempo_changes(source.grid, start, stats.get("clock_tempo", []))
    result["load_average_before"] = load
    result["player_cpu_share"] = round(cpu_share, 4)   # of one CPU, Start to Stop: what a slower CPU must have
    return result


def _intended(ons: list[tuple[float, int]], stats: dict, ticks_per_step: int) -> list[int | None]:
    """The song position (clock ticks) the player meant each received note_on for: its own record
    of the note of that pitch scheduled nearest in time (within 50 ms), else None."""
    by_pitch: dict[int, list[tuple[float, int]]] = {}
    for (t, pitch), tick in zip(stats["note_ons"], stats["note_ticks"]):
        by_pitch.setdefault(pitch, []).append((t, tick))
    out = []
    for t, pitch in ons:
        near = min(by_pitch.get(pitch, []), key=lambda c: abs(c[0] - t), default=None)
        out.append(near[1] * ticks_per_step if near is not None and abs(near[0] - t) < 0.05 else None)
    return out


def _tempo_changes(grid: list, start: int, tempo: list) -> list[dict]:
    """Per tempo change of the source: beats after it until the player's tempo stays within 1 %."""
    out = []
    for i in range(start + 1, len(grid)):
        if grid[i][2] == grid[i - 1][2]:
            continue
        at, bpm = grid[i][0], grid[i][2]
        until = next((g[0] for g in grid[i:] if g[2] != bpm), float("inf"))
        after = [(t, b) for t, b in tempo if at <= t < until]
        settled = next((j for j in range(len(after)) if all(abs(b - bpm) <= bpm / 100 for _, b in after[j:])), None)
        out.append({"from_bpm": grid[i - 1][2], "to_bpm": bpm,
                    "beats_until_within_1pct": None if settled is None else round((after[settled][0] - at) * bpm / 60, 2)})
    return out


def _even(times) -> dict:
    t = np.asarray(times)
    n = np.arange(len(t))
    slope, icpt = np.polyfit(n, t, 1)
    return {"ticks": len(t), "bpm": round(60 / (slope * PPQ), 3),
            "interval_error_ms": _ms(np.abs(np.diff(t) - slope)), "from_even_grid_ms": _ms(np.abs(t - (icpt + slope * n)))}


def send(bundle, tmp: Path, bpm: float = 120, seconds: float = 20, period: int = 32) -> dict:
    with jack.JackServer(f"playbach-clocks-{os.getpid()}", tmp, period=period):
        receiver = jack.Receiver(client="playbach-bench", timing=True)
        proc, stats_path = _player(bundle, tmp, "--clock", "send", "--bpm", bpm, "--port", receiver.name,
                                   "--seconds", seconds)
        stats = _finish(proc, stats_path)
        messages = receiver.taken()
        receiver.close()
    got = [t for t, m in messages if m == [0xF8]]
    return {"jack_period_ms": round(period / 48, 3), "asked_bpm": bpm,
            "starts": sum(m == [0xFA] for _, m in messages), "stops": sum(m == [0xFC] for _, m in messages),
            "at_receiver": _even(got), "as_sent": _even(stats["clock_sent"])}


def flood(bundle, tmp: Path, seconds: float = 20, flood_at: float = 5, flood_for: float = 10,
          rate: int = 20000, bpm: float = 120) -> dict:
    runs = {}
    with jack.JackServer(f"playbach-flood-{os.getpid()}", tmp, period=128):
        for name in ("quiet", "flood"):
            receiver = jack.Receiver(client=f"playbach-bench-{name}")
            source = Flood()
            proc, stats_path = _player(bundle, tmp, "--port", receiver.name, "--input-port", "playbach-flood",
                                       "--bpm", bpm, "--seconds", seconds)
            first = None
            rss = []
            while proc.poll() is None:
                now = time.monotonic()
                if first is None and any(m[0] & 0xF0 == 0x90 for _, m in receiver.taken()):
                    first = now
                    if name == "flood":
                        threading_timer = first + flood_at
                if first is not None and name == "flood" and source.thread is None and now >= threading_timer:
                    source.run(flood_for, rate)
                try:
                    rss.append((now - (first or now), _rss_kb(proc.pid) / 1024))
                except (OSError, IndexError):
                    pass
                time.sleep(0.25)
            stats = _finish(proc, stats_path)
            source.close()
            messages = receiver.taken()
            receiver.close()
            received = [(t, m[1]) for t, m in messages if m[0] & 0xF0 == 0x90 and m[2] > 0]
            pairs = _match(sorted((t, p) for t, p in stats["note_ons"]), received)
            error = [g - s for s, g in pairs]
            flood_window = [s for s, _ in pairs if first + flood_at <= s <= first + flood_at + flood_for]
            run = {"notes": len(stats["note_ons"]), "matched": len(pairs), "onset_error_ms": _ms(error),
                   "notes_in_flood_window": len(flood_window),
                   "rss_mb": {"before": round(max([r for t, r in rss if 0 < t < flood_at] or [0]), 1),
                              "during": round(max([r for t, r in rss if flood_at <= t <= flood_at + flood_for] or [0]), 1),
                              "after": round(max([r for t, r in rss if t > flood_at + flood_for] or [0]), 1)}}
            if name == "flood":
                run["flood_messages"] = source.count
                run["flood_rate_per_s"] = round(source.count / flood_for)
            runs[name] = run
    runs["p99_flood_minus_quiet_ms"] = round(runs["flood"]["onset_error_ms"]["p99"] - runs["quiet"]["onset_error_ms"]["p99"], 3)
    return runs


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--out", default="bench/results/clock.json")
    p.add_argument("--parts", default="follow,send,flood")
    p.add_argument("--period", type=int, default=64, help="JACK period (frames at 48 kHz) of the follow part")
    p.add_argument("--steady-seconds", type=float, default=300, help="length of the follow part's steady take")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    out = Path(a.out)
    result = _previous(out)   # the parts not run now keep their last figures
    with tempfile.TemporaryDirectory() as tmp:
        for part in a.parts.split(","):
            before = os.getloadavg()
            if part == "follow":
                result[part] = follow(a.bundle, Path(tmp), period=a.period, steady_seconds=a.steady_seconds)
            else:
                result[part] = {"send": send, "flood": flood}[part](a.bundle, Path(tmp))
            result[part]["load_average"] = {"before": before, "after": os.getloadavg()}
            print(part, json.dumps(result[part], indent=1), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, json.dumps(result, indent=1) + "\n")
    return 0


def _previous(path: Path) -> dict:
    """The last results, each part with the load average it was measured under."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    load = {"before": old.pop("load_average_before", None), "after": old.pop("load_average_after", None)}
    for part in old.values():
        if isinstance(part, dict):
            part.setdefault("load_average", load)
    return old


if __name__ == "__main__":
    sys.exit(main())
