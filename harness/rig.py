"""The rest of a rig, on JACK: a MIDI clock source and a flood of junk, each a client of its own
sending from a thread (SCHED_FIFO when allowed, so the source's own timing is not the figure).

    src = ClockSource()                  # port 'playbach-clocksrc:out'
    src.run([("msg", [0xFA]), ("ticks", 100, 480), ("ticks", 140, 480), ("msg", [0xFC])], jitter=0.001)
    src.log                              # (monotonic send time, message) of everything sent
    src.grid                             # (due, sent or None, bpm) of every tick, lost ones too
    flood = Flood(); flood.run(seconds=10, rate=20000)
"""
from __future__ import annotations

import os
import random
import threading
import time

import rtmidi

PPQ = 24


def _realtime(priority: int = 30) -> None:
    try:   # this thread only (Linux: pid 0 is the calling thread)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError):
        pass


class _Source:
    def __init__(self, client: str, port: str = "out"):
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client)
        self.out.open_virtual_port(port)
        self.name = f"{client}:{port}"
        self.thread: threading.Thread | None = None
        self.log: list[tuple[float, list[int]]] = []

    def send(self, data: list[int]) -> None:
        self.log.append((time.monotonic(), data))
        self.out.send_message(data)

    def _start(self, target, *args) -> None:
        self.thread = threading.Thread(target=target, args=args, daemon=True)
        self.thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def close(self) -> None:
        self.wait()
        self.out.close_port()
        self.out.delete()


class ClockSource(_Source):
    """Sends a script of MIDI clock: ("ticks", bpm, count), ("msg", bytes), ("pause", seconds).

    Ticks are due on an ideal grid (never summed sleeps) and each is sent up to `jitter` s early
    or late, uniformly; every `drop_every`-th tick is not sent at all (a byte lost on the way).
    `ticks` holds (when it was sent, its tempo) per tick sent, `grid` (when it was due, when it was
    sent or None, its tempo) per tick the source counted, `log` every message sent and when, and
    `marks` (message, how many ticks the source had counted when it was sent)."""

    def __init__(self, client: str = "playbach-clocksrc"):
        super().__init__(client)
        self.ticks: list[tuple[float, float]] = []   # (send time, bpm) of each tick sent
        self.grid: list[tuple[float, float | None, float]] = []
        self.marks: list[tuple[list[int], int]] = []

    def run(self, script: list[tuple], jitter: float = 0.0, seed: int = 0, lead: float = 0.05,
            drop_every: int = 0) -> None:
        self._start(self._run, script, jitter, seed, lead, drop_every)

    def _run(self, script, jitter, seed, lead, drop_every) -> None:
        _realtime()
        rng = random.Random(seed)
        due = time.monotonic() + lead
        for step in script:
            if step[0] == "msg":
                self.send(list(step[1]))
                self.marks.append((list(step[1]), len(self.grid)))
            elif step[0] == "pause":
                time.sleep(step[1])
                due = time.monotonic()
            elif step[0] == "ticks":
                _, bpm, count = step
                for _ in range(count):
                    at = due + rng.uniform(-jitter, jitter)
                    delay = at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if drop_every and (len(self.grid) + 1) % drop_every == 0:
                        self.grid.append((due, None, bpm))
                    else:
                        self.send([0xF8])
                        self.ticks.append((self.log[-1][0], bpm))
                        self.grid.append((due, self.log[-1][0], bpm))
                    due += 60.0 / (bpm * PPQ)


class Flood(_Source):
    """Junk at `rate` messages a second, in 1 ms bursts: SysEx, active sensing, clock, note_offs
    with no note_on, and notes on every channel (each struck note ended by the flood later)."""

    def __init__(self, client: str = "playbach-flood"):
        super().__init__(client)
        self.count = 0

    def run(self, seconds: float, rate: int = 20000, seed: int = 0) -> None:
        self._start(self._run, seconds, rate, seed)

    def _run(self, seconds: float, rate: int, seed: int) -> None:
        _realtime(25)
        rng = random.Random(seed)
        junk = [[0xF0, 0x7D, 1, 2, 3, 4, 5, 6, 7, 8, 0xF7], [0xFE], [0xF8]]
        per_burst = max(1, rate // 1000)
        start = time.monotonic()
        burst = 0
        while (now := time.monotonic()) < start + seconds:
            for _ in range(per_burst):
                kind = rng.randrange(5)
                channel, pitch = rng.randrange(16), rng.randrange(128)
                if kind < 3:
                    msg = junk[kind]
                elif kind == 3:
                    msg = [0x80 | channel, pitch, 0]                      # a note_off of nothing
                else:
                    msg = [0x90 | channel, pitch, 1 + rng.randrange(127)]  # a note ...
                    self.out.send_message(msg)
                    msg = [0x80 | channel, pitch, 0]                       # ... ended again
                    self.count += 1
                self.out.send_message(msg)
                self.count += 1
            burst += 1
            delay = start + burst / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
