"""The live benchmark: `playbach play` as a subprocess, into a real MIDI port, measured.

By default it brings its own JACK server (dummy driver) and receiving port, which stamps each
message with time.monotonic() as it arrives; the player's --stats file says when each note was
scheduled, on the same clock. Meanwhile a probe client sends its own messages straight to the
receiver (channel 16, CC 119) and times them: that is the transport's latency in the same run,
which the onset error is reported net of. With --port (someone else's synth) only what the
player itself reports is measured.

    run_live_bench("models/default", seconds=60, bpm=120) -> dict (JSON-ready; bpm defaults to the player's)
"""
from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from playbach import settings
from playbach.errors import UserError
from playbach.settings import DEFAULTS

log = logging.getLogger(__name__)

PROBE_CHANNEL, PROBE_CC = 15, 119
PROBE_EVERY = 0.1     # seconds between transport probes (jittered)
APPLIANCE_NICE = -10  # playbach.service's Nice=
JACK_PERIOD = 128     # frames at 48 kHz: 2.7 ms of JACK's own quantization
SENT_LATE = 0.010     # seconds: a note_on the player's loop sent this long after it was due is late


def _ms(values) -> dict:
    v = np.asarray(values, dtype=np.float64) * 1e3
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "median": round(float(np.median(v)), 3),
            "p99": round(float(np.percentile(v, 99)), 3), "max": round(float(v.max()), 3)}


def sent_after_due(stats: dict) -> list[float] | None:
    """Per note_on in the player's --stats, in order: when it went out less when it was due (s);
    None when the sends do not account for every note."""
    sent = [t for t, n in stats.get("note_on_sends") or [] for _ in range(n)]
    due = sorted(t for t, _ in stats["note_ons"])
    return [s - d for s, d in zip(sent, due)] if len(sent) == len(due) else None


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _jack_shm_kb(pid: int) -> int:
    """Resident kB of the JACK server's shared memory mapped into a process.

    Every JACK client maps the server's /dev/shm/jack-* segment (about 100 MB, resident and
    locked); it is the server's memory, not the player's, so it is reported apart. Read once:
    parsing smaps takes long enough to hold up the receiver's timestamps."""
    total, name = 0, ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else ""
            elif parts[0] == "Rss:" and name.startswith("/dev/shm/jack"):
                total += int(parts[1])
    return total


def _renice(nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:   # not allowed to raise priority: measure at the normal one
        pass


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Probe:
    """Sends CC messages straight to the receiver from a thread, remembering when."""

    def __init__(self, target: str):
        import rtmidi

        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="playbach-probe")
        names = self.out.get_ports()
        self.out.open_port(names.index(target), "out")
        self.sent: list[float] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(0)
        while self.running:
            time.sleep(PROBE_EVERY * rng.uniform(0.5, 1.5))   # random phase against JACK's period
            value = len(self.sent) % 128
            self.sent.append(time.monotonic())
            self.out.send_message([0xB0 | PROBE_CHANNEL, PROBE_CC, value])

    def stop(self) -> None:
        self.running = False
        self.thread.join()
        self.out.delete()


def _transport(probe: Probe, messages) -> list[float]:
    """Each probe's trip (received - sent). A probe carries its number mod 128, so one that never
    arrived is skipped instead of pairing every later probe with the one sent before it."""
    got = [(t, m[2]) for t, m in messages if len(m) == 3 and m[0] == 0xB0 | PROBE_CHANNEL and m[1] == PROBE_CC]
    trips, i = [], 0
    for t, number in got:
        while i < len(probe.sent) and i % 128 != number:
            i += 1
        if i == len(probe.sent):
            break
        trips.append(t - probe.sent[i])
        i += 1
    return trips


def run_live_bench(bundle_path: str | Path, seconds: float = 60, bpm: float = DEFAULTS.bpm, port: str | None = None,
                   midi_api: str | None = "jack", variant: str = "int8", accelerator: str = "auto",
                   realtime_priority: int = 0, nice: int = APPLIANCE_NICE, extra_args: tuple[str, ...] = ()) -> dict:
    """Play `seconds` at `bpm` and measure; see the module docstring for what and how.

    The player runs as the appliance runs it (systemd/playbach.service: Nice=-10, no realtime
    scheduling) unless `realtime_priority` asks for SCHED_FIFO. `extra_args`: more player flags
    (bench/web.py gives the control socket's)."""
    midi_api = midi_api or "jack"
    if port is None and midi_api != "jack":
        raise UserError("the live bench brings its own receiving port only on JACK: --midi-api jack, "
                        "or give --port")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        env, receiver, probe = dict(os.environ), None, None
        if port is None:
            env, receiver = _own_receiver(stack, Path(tmp))
            port = receiver.name
        stats_path = Path(tmp) / "stats.json"
        cmd = [sys.executable, "-m", "playbach.cli", "play", "--bundle", str(bundle_path), "--port", port,
               "--midi-api", midi_api, "--bpm", str(bpm), "--seconds", str(seconds), "--seed", "0",
               "--variant", variant, "--accelerator", accelerator, "--stats", str(stats_path),
               "--realtime-priority", str(realtime_priority), "--log-level", "warning", *extra_args]
        run = dict(bundle=str(bundle_path), bpm=bpm, nice=nice, realtime_priority=realtime_priority,
                   jack_period_ms=round(JACK_PERIOD / 48, 2) if receiver is not None else None,
                   seconds=seconds, port=port, midi_api=midi_api)
        log.info("live bench: %s", " ".join(cmd))
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: _renice(nice))
        if receiver is not None:
            probe = Probe(receiver.name)
            probe.thread.start()
        cpu_window, status, usage, memory = _watch(proc, receiver)
        proc.returncode = os.waitstatus_to_exitcode(status)
        output = proc.stdout.read()
        if probe is not None:
            time.sleep(0.05)
            probe.stop()
        if proc.returncode != 0 or not stats_path.exists():
            raise UserError(f"the player failed in the live bench (exit {proc.returncode}):\n{output[-3000:]}")
        stats = json.loads(stats_path.read_text())
        messages = receiver.taken() if receiver is not None else []

    result = _summary(run, stats, cpu_window, usage, memory, time.monotonic() - started)
    late = sent_after_due(stats)
    if late is not None:   # how late the player's own loop sent each note_on, before any transport
        result["sent_after_due_ms"] = _ms(late)
        result["notes_sent_late"] = sum(x > SENT_LATE for x in late)
    if receiver is not None:
        result.update(_onsets(stats, messages, probe, started))
    else:
        result["first_note_s"] = round(stats["play_start"] - started, 3)
    return result


def _own_receiver(stack: ExitStack, folder: Path):
    """A JACK server of the bench's own and a receiving port on it, closed with `stack`."""
    from playbach.harness import jack

    server = jack.JackServer(f"playbach-bench-{os.getpid()}", folder, period=JACK_PERIOD)
    stack.callback(server.stop)
    receiver = jack.Receiver(client="playbach-bench")
    stack.callback(receiver.close)
    return server.env(), receiver


def _summary(run: dict, stats: dict, cpu_window: float | None, usage, memory: dict, wall: float) -> dict:
    """The bench's figures that need no receiver: how it was run, the notes, inference, CPU, memory."""
    return {
        **run, "model": stats["model"], "backend": stats["backend"],
        "notes": len(stats["note_ons"]),
        "inference_ms": _ms(stats["inference_seconds"]),
        "cpu_percent": cpu_window,
        "cpu_percent_with_startup": round(100 * (usage.ru_utime + usage.ru_stime) / wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        **memory,
    }


def _watch(proc: subprocess.Popen, receiver) -> tuple[float | None, int, object, dict]:
    """Wait for the player (reaping it with wait4 for its rusage) while sampling CPU and memory.

    Returns CPU % of one core while playing (1 s after the first note to the end), the wait
    status, the rusage (peak RSS, CPU seconds with startup) and the memory while playing."""
    first, marks, rss, jack_shm = None, [], [0], 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        now = time.monotonic()
        if first is None and (receiver is None or any(m[0] & 0xF0 == 0x90 for _, m in receiver.taken())):
            first = now
        if first is not None and now - first >= 1.0:
            try:
                marks.append((now, _cpu_seconds(proc.pid)))
                rss.append(_rss_kb(proc.pid))
                jack_shm = jack_shm or _jack_shm_kb(proc.pid)
            except (OSError, IndexError):
                pass
        time.sleep(0.25)
    cpu = None
    if len(marks) >= 2:
        (t0, c0), (t1, c1) = marks[0], marks[-1]
        cpu = round(100 * (c1 - c0) / (t1 - t0), 2)
    return cpu, status, usage, {"rss_while_playing_mb": round(max(rss) / 1024, 1),
                                "jack_shm_mb": round(jack_shm / 1024, 1),
                                "rss_without_jack_shm_mb": round((max(rss) - jack_shm) / 1024, 1)}


def _match(scheduled: list, received: list, window: float = 1.0) -> list[tuple[float, float]]:
    """(scheduled, received) time pairs: each scheduled note_on with the first unused received
    one of its pitch within `window` s after it, in order, so a lost message costs one pair
    instead of shifting every later one."""
    pairs, used, start = [], set(), 0
    for t_sched, pitch in scheduled:
        while start < len(received) and received[start][0] < t_sched - 0.01:
            start += 1
        for i in range(start, len(received)):
            t_got, p = received[i]
            if t_got > t_sched + window:
                break
            if p == pitch and i not in used:
                used.add(i)
                pairs.append((t_sched, t_got))
                break
    return pairs


def _onsets(stats: dict, messages, probe: Probe, started: float) -> dict:
    received = [(t, m[1]) for t, m in messages if m[0] & 0xF0 == 0x90 and m[2] > 0]
    scheduled = sorted((t, p) for t, p in stats["note_ons"])
    pairs = _match(scheduled, received)
    n = len(pairs)
    scheduled = [s for s, _ in pairs]
    error = np.array([g - s for s, g in pairs])
    transport = np.array(_transport(probe, messages))
    out = {"first_note_s": round(received[0][0] - started, 3) if received else None,
           "notes_received": len(received), "notes_matched": n,
           "onset_error_ms": _ms(error), "transport_ms": _ms(transport)}
    if n:   # where the worst ones fell: (seconds into the take, ms late)
        worst = np.argsort(error)[-5:][::-1]
        out["worst_onsets"] = [[round(scheduled[i] - scheduled[0], 3), round(float(error[i]) * 1e3, 3)] for i in worst]
    if n and transport.size:
        out["onset_beyond_transport_ms"] = {
            k: round(out["onset_error_ms"][k] - out["transport_ms"][k], 3) for k in ("median", "p99", "max")}
    if n >= 20:
        slope = np.polyfit(np.array(scheduled[:n]) - scheduled[0], error, 1)[0]
        span = scheduled[n - 1] - scheduled[0]
        out["drift_ms"] = round(float(slope * span * 1e3), 3)   # fitted change of the error over the run
        out["drift_end_minus_start_ms"] = round(float((np.median(error[-10:]) - np.median(error[:10])) * 1e3), 3)
    return out


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="live benchmark of `playbach play` (JSON to stdout)")
    p.add_argument("bundle")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--variant", default="int8", help="the model measured (default int8, not the player's auto)")
    settings.add_arguments(p, ("bpm", "realtime_priority"))
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    settings.check_arguments(a, ("bpm", "realtime_priority"))
    logging.basicConfig(level=logging.INFO)
    report = run_live_bench(a.bundle, a.seconds, a.bpm, variant=a.variant, realtime_priority=a.realtime_priority)
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
