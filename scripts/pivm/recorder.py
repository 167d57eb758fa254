"""The synth's ears: every byte that reaches the USB MIDI gadget's MIDI IN, timestamped.

Runs inside the emulated Pi (plain python3, no packages). The gadget's own ALSA card (the
`f_midi` function, card id `CARD_ID`) has a rawmidi device whose *input* is what the USB host,
i.e. playbach through snd-usb-audio, sent to the synth. Unplugging (unbinding the UDC) removes
that card, so the recorder waits for it to come back and reopens it; each open and close is
logged too. Every message goes to a text log at once (one line each), so nothing is lost if
the guest reboots or is stopped, and the accounting below can be redone from the file.

Accounting: a note_on is ended by a note_off (or note_on velocity 0) of the same channel and
key, or by a later CC 123 (all notes off) or CC 120 (all sound off) on its channel. Whatever
is not ended when the log stops is a stuck note: a real synth would hold it forever.
"""
from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ALL_OFF_CONTROLLERS = (120, 123)
RT_PRIORITY = 30          # the recorder thread's SCHED_FIFO priority, above the player's 20
# data bytes per status (high nibble), channel messages only; system messages are skipped
DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
KINDS = {0x80: "note_off", 0x90: "note_on", 0xA0: "poly", 0xB0: "cc", 0xC0: "program",
         0xD0: "pressure", 0xE0: "pitchbend"}


@dataclass
class Event:
    t: float          # guest CLOCK_MONOTONIC, seconds
    kind: str         # note_on, note_off, cc, program, ... (note_on velocity 0 becomes note_off)
    channel: int      # 0-15
    a: int = 0        # key / controller / program
    b: int = 0        # velocity / value

    def line(self) -> str:
        return f"{self.t:.6f} {self.kind} {self.channel} {self.a} {self.b}"


class Parser:
    """Bytes to channel messages, with running status (ALSA does not use it, others may)."""

    def __init__(self) -> None:
        self.status = 0
        self.data: list[int] = []

    def feed(self, data: bytes, t: float) -> list[Event]:
        out = []
        for byte in data:
            if byte >= 0xF8:                 # realtime bytes may come anywhere
                continue
            if byte & 0x80:
                self.status = byte if byte < 0xF0 else 0   # system common/exclusive: ignored
                self.data = []
                continue
            if not self.status:
                continue
            self.data.append(byte)
            high = self.status & 0xF0
            if len(self.data) == DATA_BYTES[high]:
                a, b = self.data[0], (self.data[1] if len(self.data) > 1 else 0)
                kind = "note_off" if high == 0x90 and b == 0 else KINDS[high]
                out.append(Event(t, kind, self.status & 0x0F, a, b))
                self.data = []
        return out


@dataclass
class Balance:
    """Note bookkeeping over a stream of events (see the module docstring)."""
    sounding: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    note_ons: int = 0

    def add(self, e: Event) -> None:
        if e.kind == "note_on":
            self.note_ons += 1
            self.sounding.setdefault((e.channel, e.a), []).append(e.t)
        elif e.kind == "note_off":
            ons = self.sounding.get((e.channel, e.a))
            if ons:
                ons.pop(0)
                if not ons:
                    del self.sounding[(e.channel, e.a)]
        elif e.kind == "cc" and e.a in ALL_OFF_CONTROLLERS:
            for key in [k for k in self.sounding if k[0] == e.channel]:
                del self.sounding[key]

    def stuck(self, before: float = float("inf")) -> list[tuple[int, int, float]]:
        """(channel, key, on time) of every note still sounding that started before `before`."""
        return sorted((ch, key, t) for (ch, key), ons in self.sounding.items() for t in ons if t < before)


def balance(events: list[Event]) -> Balance:
    b = Balance()
    for e in events:
        b.add(e)
    return b


def read_log(path: str | Path) -> list[Event]:
    """The events of a recorder log (open/close lines are skipped)."""
    events = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] in KINDS.values():
            events.append(Event(float(parts[0]), parts[1], int(parts[2]), int(parts[3]), int(parts[4])))
    return events


def find_card(card_id: str) -> str | None:
    """/dev/snd/midiC<n>D0 of the ALSA card with this id, or None while it is not there."""
    link = Path("/proc/asound") / card_id      # a symlink to card<n>
    try:
        n = os.readlink(link).removeprefix("card")
    except OSError:
        return None
    dev = f"/dev/snd/midiC{n}D0"
    return dev if os.path.exists(dev) else None


class Recorder(threading.Thread):
    """Reads the gadget's rawmidi input for as long as the agent runs; thread-safe queries."""

    def __init__(self, card_id: str, log_path: str | Path, boot: int) -> None:
        super().__init__(daemon=True, name="recorder")
        self.card_id, self.boot = card_id, boot
        self.log = open(log_path, "a", buffering=1)
        self.lock = threading.Lock()
        self.events: list[Event] = []      # this boot's events
        self.opened_at: list[float] = []   # when the card was (re)opened
        self.stopping = False

    def _note(self, text: str) -> None:
        self.log.write(f"{time.monotonic():.6f} # boot {self.boot}: {text}\n")

    def run(self) -> None:
        # SCHED_FIFO above the player's 20 (this thread only): the synth's ears must not be
        # starved. A replug under a loaded host once had the card reopened 0.75 s after it was
        # back, after the player had reconnected, and the reconnection's CC 123 went unheard.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
            self._note(f"SCHED_FIFO {RT_PRIORITY}")
        except (OSError, AttributeError) as e:
            self._note(f"no realtime priority: {e}")
        while not self.stopping:
            dev = find_card(self.card_id)
            if dev is None:
                time.sleep(0.01)     # the card appears at UDC bind, well before the USB host sees it
                continue
            try:
                fd = os.open(dev, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as e:
                self._note(f"cannot open {dev}: {e}")
                time.sleep(0.05)
                continue
            with self.lock:
                self.opened_at.append(time.monotonic())
            self._note(f"open {dev}")
            self._read(fd)
            os.close(fd)
            self._note(f"closed {dev}")

    def _read(self, fd: int) -> None:
        parser = Parser()
        while not self.stopping:
            ready, _, broken = select.select([fd], [], [fd], 0.2)
            if not ready and not broken:
                continue
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                continue
            except OSError:          # ENODEV: unplugged
                return
            if not data:
                return
            t = time.monotonic()
            events = parser.feed(data, t)
            for e in events:
                self.log.write(e.line() + "\n")
            with self.lock:
                self.events.extend(events)

    def stop(self) -> None:
        self.stopping = True
        self.join(timeout=2)
        self.log.flush()
        os.fsync(self.log.fileno())

    # --- queries, for the agent -------------------------------------------------------------
    def snapshot(self) -> list[Event]:
        with self.lock:
            return list(self.events)

    def first_note_after(self, t: float) -> float | None:
        with self.lock:
            return next((e.t for e in self.events if e.kind == "note_on" and e.t > t), None)

    def first_all_off_after(self, t: float) -> float | None:
        """Time of the first All Notes Off (or All Sound Off) after `t`: a player stopping."""
        with self.lock:
            return next((e.t for e in self.events if e.kind == "cc" and e.a in ALL_OFF_CONTROLLERS and e.t > t), None)

    def wait_note_after(self, t: float, timeout: float) -> float | None:
        """Time of the first note_on after `t`, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first_note_after(t)
            if found is not None:
                return found
            time.sleep(0.1)
        return self.first_note_after(t)
