"""A hostile load on the real player, as bench/hostile.py and tests/test_hostile.py
run it: `run()` plays one take under the loads and returns what it measured.

One player as the service runs it (SCHED_FIFO 20, its control socket, its input port, internal
clock) plays into a timestamping receiver on a private `jackd -d dummy` (48 kHz, period 64 =
1.33 ms). One take, in windows of `--seconds` with quiet between:

  quiet        nothing (the yardstick)
  control      malformed control lines (5,000 '[', bytes that are not UTF-8, 8,000-byte lines,
               unknown ops, NaN) at 10,000 a second over every connection the socket keeps (of 256
               asked for); a connection hung up on is opened again at once
  overlong     lines over the 8 KiB cap at 10,000 a second: each connection is hung up on, and
               opened again at once
  connect_storm  every slot held, and connections opened and closed as fast as a client can
  cc pitchbend aftertouch startstop   20,000 messages a second of each on the input port (CC:
               the steering knobs among them, never the panic CCs 120-127)
  clock        MIDI clock at 10 kHz on the input port

Per window: the onsets' error (received - scheduled, the player's --stats), median and p99, and
p99 minus the quiet window's (the transport's own share is in both); notes scheduled and not
received (lost); for the take, notes left sounding at the receiver. Through the whole take a
"page" asks the socket for `status` twice a second on a connection it keeps and once a second on
a fresh one: answered, and how long the answers took.

The socket loads (control, overlong, connect_storm) run in a child process, never in this one:
the receiver stamps each note in rtmidi's callback, which runs in JACK's process thread and waits
for this process's GIL, and a flood loop here kept it waiting (notes up to 0.75 s "late" and
lost at the receiver while the player had sent each within 0.2 ms). Run as root, the child is
`nobody`, a local account that is not the web service's (device/control_guard.py), and the
socket is given to its group, as the page's group would be; the page runs here, as root.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from playbach import wire
from playbach.harness import jack
from playbach.harness.livebench import _match, _ms, _rss_kb
from playbach.harness.rig import _realtime, _Source

KINDS = ("control", "overlong", "connect_storm", "cc", "pitchbend", "aftertouch", "startstop", "clock")
MIDI_RATE = {"cc": 20000, "pitchbend": 20000, "aftertouch": 20000, "startstop": 20000, "clock": 10000}
CONTROL_RATE = 10000
MAX_CONNECTIONS = 256


def midi_message(kind: str, rng: random.Random, i: int) -> list[int]:
    ch = rng.randrange(16)
    if kind == "cc":
        return [0xB0 | ch, rng.choice((1, 7, 10, 11, 16, 17, 18, 19, 64, 74)), rng.randrange(128)]
    if kind == "pitchbend":
        return [0xE0 | ch, rng.randrange(128), rng.randrange(128)]
    if kind == "aftertouch":
        return [0xD0 | ch, rng.randrange(128)] if i % 2 else [0xA0 | ch, rng.randrange(128), rng.randrange(128)]
    if kind == "startstop":
        return [0xFA] if i % 2 else [0xFC]
    return [0xF8]


class MidiFlood(_Source):
    """One kind of message at `rate` a second, in 1 ms bursts, at FIFO 25 (FloodProcess runs it)."""

    def __init__(self) -> None:
        super().__init__("playbach-hostile")

    def flood(self, kind: str, seconds: float, rate: int) -> int:
        _realtime(25)
        rng, per_burst, start, burst, sent = random.Random(0), max(1, rate // 1000), time.monotonic(), 0, 0
        while time.monotonic() < start + seconds:
            for _ in range(per_burst):
                self.out.send_message(midi_message(kind, rng, sent))
                sent += 1
            burst += 1
            delay = start + burst / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return sent


class FloodProcess:
    """The MIDI flood's port in a process of its own, there from the start (the player listens to
    it) to the end. A flood thread in this process would hold its GIL, which the receiver's
    callback waits for to stamp a note: the notes would look late for the measuring's sake."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")   # a fresh interpreter: no JACK client forked
        self.conn, theirs = context.Pipe()
        self.proc = context.Process(target=_flood_child, args=(theirs,), daemon=True)
        self.proc.start()
        if not self.conn.poll(30):
            raise RuntimeError("the flood's process did not open its port in 30 s")
        self.conn.recv()

    def flood(self, kind: str, seconds: float, rate: int) -> int:
        """Send `kind` at `rate` a second for `seconds`; how many were sent."""
        self.conn.send((kind, seconds, rate))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(10)


def _flood_child(conn) -> None:
    flood = MidiFlood()
    conn.send("ready")
    while (job := conn.recv()) is not None:
        conn.send(flood.flood(*job))
    flood.close()


# under the socket's 8 KiB line cap, so a connection is kept (an over-long line is hung up on)
BAD_LINES = [b"[" * 5000 + b"\n", b"\xff\xfe\xc3\x28 not utf-8\n", b"x" * 8000 + b"\n", b'{"op": "nope"}\n',
             b'{"op": "set", "changes": {"bpm": NaN}}\n', b'{"id": 1e999}\n', b"{\n", b"\n"]


def hold_slots(path: str) -> tuple[list[socket.socket], int]:
    """Connect up to MAX_CONNECTIONS times; keep the connections the player did not turn away."""
    conns = []
    for _ in range(MAX_CONNECTIONS):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(0.5)
            s.connect(path)
            s.setblocking(False)
            conns.append(s)
        except OSError:
            break
    time.sleep(0.5)   # a turned-away connection gets its "busy" line and is closed
    kept = []
    for s in conns:
        try:
            data = s.recv(65536)
            alive = bool(data) and b"busy" not in data
        except BlockingIOError:
            alive = True
        except OSError:
            alive = False
        (kept.append if alive else lambda c: c.close())(s)
    return kept, len(conns)


def control_flood(path: str, seconds: float, rate: int, lines: list[bytes], reconnect: bool, result: dict) -> None:
    """Malformed lines at `rate` a second over every connection the socket keeps; with
    `reconnect`, a connection the player hangs up on is opened again at once."""
    conns, tried = hold_slots(path)
    result.update(connections_tried=tried, connections_kept=len(conns), lines_sent=0,
                  lines_refused_by_full_socket=0, hung_up=0)
    start, sent, i = time.monotonic(), 0, 0
    while conns and time.monotonic() < start + seconds:
        for _ in range(rate // 1000):
            if not conns:
                break
            s = conns[i % len(conns)]
            i += 1
            try:
                s.send(lines[i % len(lines)])
                sent += 1
            except BlockingIOError:
                result["lines_refused_by_full_socket"] += 1
            except OSError:   # the player hung up on it
                result["hung_up"] += 1
                conns.remove(s)
                s.close()
                if reconnect:
                    try:
                        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        s.connect(path)
                        s.setblocking(False)
                        conns.append(s)
                    except OSError:
                        pass
                continue
            try:   # read and drop the replies, so our side never blocks the player's writes
                while s.recv(65536):
                    pass
            except OSError:
                pass
        delay = start + (sent + result["lines_refused_by_full_socket"]) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    result["lines_sent"] = sent
    for s in conns:
        s.close()


def in_child(load, *args) -> dict:
    """Run `load(*args, result)` in a forked child (as `nobody` when we are root); its result."""
    stranger = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: sockets only, then _exit (nothing of the parent's is closed twice)
        try:
            os.close(r)
            if stranger is not None:
                os.setgroups([])
                os.setgid(stranger.pw_gid)
                os.setuid(stranger.pw_uid)
            result: dict = {}
            load(*args, result)
            os.write(w, json.dumps({**result, "peer_uid": os.geteuid()}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"error": "the load's child process failed"}


def open_to_strangers(sock: str) -> None:
    """The socket to `nobody`'s group (0660), as install.sh gives it to the page's group."""
    if os.geteuid() == 0:
        os.chown(sock, -1, pwd.getpwnam("nobody").pw_gid)
        os.chmod(sock, 0o660)


def connect_storm(path: str, seconds: float, result: dict) -> None:
    """Every slot held, then connections opened and dropped as fast as one client can."""
    held, _ = hold_slots(path)
    start, made = time.monotonic(), 0
    while time.monotonic() < start + seconds:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                made += 1
        except OSError:
            time.sleep(0.0001)
    result.update(connections_kept=len(held), connects=made, connects_per_s=round(made / seconds))
    for s in held:
        s.close()


class Page:
    """Asks `status` twice a second on a kept connection, once a second on a fresh one, each
    connected as the web service connects (wire.connect: a full queue is waited out, 2 s)."""

    def __init__(self, path: str):
        self.path, self.stop = path, threading.Event()
        self.asked = {"kept": 0, "fresh": 0}
        self.answered = {"kept": [], "fresh": []}   # (when asked, seconds to the answer)
        self.failed: list[tuple[float, str]] = []     # (when, why) a fresh connection went unanswered
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _ask(self, s: socket.socket, kind: str, n: int) -> None:
        self.asked[kind] += 1
        t = time.monotonic()
        s.sendall(json.dumps({"op": "status", "id": n}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("closed")
            buf += chunk
        if json.loads(buf.splitlines()[-1]).get("id") == n:
            self.answered[kind].append((t, time.monotonic() - t))

    def _run(self) -> None:
        kept, n = None, 0
        while not self.stop.wait(0.5):
            n += 1
            try:
                if kept is None:
                    kept = wire.connect(self.path, 2.0)
                    kept.settimeout(2.0)
                self._ask(kept, "kept", n)
            except OSError:
                if kept is not None:
                    kept.close()
                kept = None
            if n % 2:
                try:
                    with wire.connect(self.path, 2.0) as fresh:
                        fresh.settimeout(2.0)
                        self._ask(fresh, "fresh", n)
                except OSError as e:
                    self.failed.append((time.monotonic(), str(e) or type(e).__name__))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def summary(self, since: float, until: float) -> dict:
        out = {}
        for kind in ("kept", "fresh"):
            got = [d for t, d in self.answered[kind] if since <= t < until]
            out[kind] = {"answered": len(got), "answer_ms": _ms(got)}
        out["fresh"]["failed"] = sorted(why for t, why in self.failed if since <= t < until)
        return out


def stuck(messages: list) -> int:
    """Notes struck at the receiver and never ended (note_off, or CC 123 on its channel)."""
    sounding: dict[tuple[int, int], int] = {}
    for _, m in messages:
        kind, ch = m[0] & 0xF0, m[0] & 0x0F
        if kind == 0x90 and m[2] > 0:
            sounding[ch, m[1]] = sounding.get((ch, m[1]), 0) + 1
        elif kind == 0x80 or (kind == 0x90 and m[2] == 0):
            sounding[ch, m[1]] = max(0, sounding.get((ch, m[1]), 0) - 1)
        elif kind == 0xB0 and m[1] in (120, 123):
            sounding = {k: v for k, v in sounding.items() if k[0] != ch}
    return sum(sounding.values())


def run(bundle: Path, tmp: Path, seconds: float, gap: float, kinds: tuple[str, ...] = KINDS) -> dict:
    sockdir = Path(tempfile.mkdtemp(prefix="playbach-hostile-", dir="/tmp"))   # reachable by `nobody`
    sockdir.chmod(0o711)
    try:
        return _run(bundle, tmp, str(sockdir / "control.sock"), seconds, gap, kinds)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def _run(bundle: Path, tmp: Path, sock: str, seconds: float, gap: float, kinds: tuple[str, ...]) -> dict:
    schedule = [("quiet", 2.0)] + [(k, 2.0 + (i + 1) * (seconds + gap)) for i, k in enumerate(kinds)]
    total = schedule[-1][1] + seconds + 3.0
    stats_path, log_path = tmp / "stats.json", tmp / "player.log"
    with jack.JackServer(f"playbach-hostile-{os.getpid()}", tmp, period=64):
        receiver, flood = jack.Receiver(client="playbach-hostile-rec"), FloodProcess()
        proc = subprocess.Popen(
            [sys.executable, "-m", "playbach.cli", "play", "--bundle", str(bundle), "--midi-api", "jack",
             "--port", receiver.name, "--input-port", "playbach-hostile", "--control-socket", sock,
             "--accelerator", "cpu", "--seed", "0", "--bpm", "120", "--seconds", str(total),
             "--realtime-priority", "20", "--stats", str(stats_path), "--retry-seconds", "0.1"],
            stdout=open(log_path, "w"), stderr=subprocess.STDOUT, text=True)
        while not any(m[0] & 0xF0 == 0x90 for _, m in receiver.taken()):
            if proc.poll() is not None:
                raise RuntimeError(f"the player ended before playing:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        open_to_strangers(sock)
        first, page, windows, rss = time.monotonic(), Page(sock), {}, []
        for kind, at in schedule:
            while time.monotonic() < first + at:
                time.sleep(0.05)
            began, detail = time.monotonic(), {}
            if kind == "control":
                detail = in_child(control_flood, sock, seconds, CONTROL_RATE, BAD_LINES, True)
            elif kind == "overlong":
                detail = in_child(control_flood, sock, seconds, CONTROL_RATE, [b"x" * 8192 + b"\n"], True)
            elif kind == "connect_storm":
                detail = in_child(connect_storm, sock, seconds)
            elif kind != "quiet":
                sent = flood.flood(kind, seconds, MIDI_RATE[kind])
                detail = {"messages": sent, "rate_per_s": round(sent / seconds)}
            else:
                time.sleep(seconds)
            rss.append(round(_rss_kb(proc.pid) / 1024, 1))
            windows[kind] = {"from": began, "to": time.monotonic(), **detail}
        proc.wait(timeout=total + 60)
        out = log_path.read_text()
        page.close()
        flood.close()
        messages = receiver.taken()
        receiver.close()
    if proc.returncode != 0:
        raise RuntimeError(f"the player exited {proc.returncode}:\n{out[-3000:]}")
    result = summarize(json.loads(stats_path.read_text()), messages, windows, page, rss, proc.returncode)
    warnings = [line for line in out.splitlines() if "WARNING" in line or "ERROR" in line]
    result["player_log"] = {"lines": len(out.splitlines()), "warnings_and_errors": len(warnings),
                            "first_warnings": warnings[:12]}
    return result


def summarize(stats: dict, messages: list, windows: dict, page: Page, rss: list, code: int) -> dict:
    received = [(t, m[1]) for t, m in messages if m[0] & 0xF0 == 0x90 and m[2] > 0]
    scheduled = sorted((t, p) for t, p in stats["note_ons"])
    pairs = _match(scheduled, received)
    result = {"player_exit": code, "notes_scheduled": len(scheduled), "notes_received": len(pairs),
              "notes_left_sounding": stuck(messages), "player_rss_mb_after_each_window": rss, "windows": {}}
    for kind, w in windows.items():
        errors = [g - s for s, g in pairs if w["from"] <= s < w["to"]]
        in_window = [s for s, _ in scheduled if w["from"] <= s < w["to"] - 1.0]   # -1 s: the last may still come
        matched = {s for s, _ in pairs}
        result["windows"][kind] = {
            **{k: v for k, v in w.items() if k not in ("from", "to")},
            "onset_error_ms": _ms(errors), "notes_lost": sum(s not in matched for s in in_window),
            "page": page.summary(w["from"], w["to"])}
    quiet = result["windows"]["quiet"]["onset_error_ms"].get("p99", 0.0)
    for w in result["windows"].values():
        if "p99" in w["onset_error_ms"]:
            w["p99_minus_quiet_ms"] = round(w["onset_error_ms"]["p99"] - quiet, 3)
    result["page_overall"] = {k: {"asked": page.asked[k], "answered": len(page.answered[k])} for k in page.asked}
    return result
