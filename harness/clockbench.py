"""The rig benchmark: `playbach play` following a real JACK MIDI clock, sending one, and under a
flood on its input; JSON out (atomically), as `python -m playbach.harness.clockbench BUNDLE`.

follow  A clock source of our own (harness/rig.py) sends Start and ticks with ±1 ms jitter at
        100 BPM, then 140 BPM. Each note_on at the bench's receiver is put against the tick it
        belongs to (the nearest one sent): its distance from that tick's send time, and the same
        net of the transport's own latency (a probe straight to the receiver, as the live bench).
        The player's --stats hold its tempo estimate per tick: how many beats after the jump it
        stays within 1 % of 140.
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

from playbach.files import write_text_atomically
from playbach.harness import jack
from playbach.harness.livebench import Probe, _match, _ms, _rss_kb, _transport
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


def follow(bundle, tmp: Path, beats_each: int = 24, jitter: float = 0.001) -> dict:
    with jack.JackServer(f"playbach-clockf-{os.getpid()}", tmp, period=128):
        receiver = jack.Receiver(client="playbach-bench")
        source = ClockSource()
        seconds = beats_each * (60 / 100 + 60 / 140) + 4
        proc, stats_path = _player(bundle, tmp, "--clock", "follow", "--clock-port", "playbach-clocksrc",
                                   "--port", receiver.name, "--seconds", seconds)
        _wait_port("playbach-clock")   # the player's clock input is there
        time.sleep(1.0)
        probe = Probe(receiver.name)
        time.sleep(0.5)   # the probe's connection is made: its first message is not lost (pairs stay in order)
        probe.thread.start()
        source.run([("ticks", 100, PPQ * 2), ("msg", [0xFA]), ("ticks", 100, PPQ * beats_each),
                    ("ticks", 140, PPQ * beats_each), ("msg", [0xFC])], jitter=jitter)
        source.wait()
        time.sleep(0.3)
        probe.stop()
        proc.terminate()
        stats = _finish(proc, stats_path)
        messages = receiver.taken()
        receiver.close()
        source.close()
    start = next(t for t, m in source.log if m == [0xFA])
    ticks = [(t, bpm) for t, bpm in source.ticks if t > start]
    times = np.array([t for t, _ in ticks])
    jump = next(t for t, bpm in ticks if bpm == 140)
    ons = [t for t, m in messages if m[0] & 0xF0 == 0x90 and m[2] > 0]
    nearest = [int(np.argmin(np.abs(times - t))) for t in ons]
    distance = np.array([t - times[i] for t, i in zip(ons, nearest)])
    transport = np.array(_transport(probe, messages))
    tempo = stats.get("clock_tempo", [])
    after = [(t, bpm) for t, bpm in tempo if t >= jump]
    settled = next((i for i in range(len(after)) if all(abs(b - 140) <= 1.4 for _, b in after[i:])), None)
    dist_ms, trans_ms = _ms(distance), _ms(transport)
    worst = np.argsort(distance)[-8:][::-1]
    return {
        "jack_period_ms": round(128 / 48, 2), "jitter_ms": jitter * 1e3, "bpm": [100, 140],
        "notes": len(ons), "notes_on_16th_ticks": sum(i % 6 == 0 for i in nearest),
        "onset_from_tick_ms": dist_ms, "transport_ms": trans_ms,
        "onset_from_tick_beyond_transport_ms": {k: round(dist_ms[k] - trans_ms[k], 3) for k in ("median", "p99", "max")},
        "worst_onsets": [[round((ons[i] - jump) * 140 / 60, 2), nearest[i] % 6, round(float(distance[i]) * 1e3, 2)]
                         for i in worst],   # (beats after the jump, tick % 6, ms from the tick)
        "off_grid": [[round((t - jump) * 140 / 60, 2), i % 6, round((t - times[i]) * 1e3, 2)]
                     for t, i in zip(ons, nearest) if i % 6][:20],
        "tempo_before_jump_bpm": round(float(np.median([b for t, b in tempo if jump - 5 < t < jump])), 3),
        "beats_after_jump_within_1pct": None if settled is None else round((after[settled][0] - jump) * 140 / 60, 2),
        "tempo_trace_after_jump": [[round((t - jump) * 140 / 60, 2), round(b, 2)] for t, b in after[:72:3]],
        "tempo_after_jump_bpm": round(float(np.median([b for _, b in after[-100:]])), 3) if after else None,
    }


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
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for part in a.parts.split(","):
            result[part] = {"follow": follow, "send": send, "flood": flood}[part](a.bundle, Path(tmp))
            print(part, json.dumps(result[part], indent=1), flush=True)
    result["load_average_after"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(Path(a.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
