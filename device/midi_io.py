"""MIDI ports found by name and kept alive unattended: the output the player plays to, and the
base of the live input it listens to.

python-rtmidi, ALSA by default or JACK. A `WatchedPort` is one rtmidi client that looks at the
port list (every `retry_seconds` while the port is missing, every CHECK_CONNECTED while it is
open) and opens the first port whose name contains the wanted text. One client does both jobs:
opening a client per look would cost a JACK client each time. When the port vanishes (a synth
unplugged) it is closed and looked for again; each change of state is logged once.

Closing drains first. JACK delivers what a client queued only in its next process cycle, and a
port closed before that cycle loses it: under CPU load the last chord's note_offs and CC 123
never reached the synth, which then holds those notes forever. So the output sends its final
note_offs and all-notes-off, waits DRAIN_SECONDS, and only then closes.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable, Sequence

import mido
import rtmidi

from playbach.errors import UserError

log = logging.getLogger(__name__)

RT_APIS = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK}
CHECK_CONNECTED = 0.5  # seconds between looks at the port list while a port is open
DRAIN_SECONDS = 0.2    # many JACK periods, even on a loaded machine; well inside the 1 s to exit


def check_api(api: str) -> int:
    if api not in RT_APIS:
        raise UserError(f"midi_api '{api}' is not one of {', '.join(RT_APIS)}")
    return RT_APIS[api]


def find_port(names: list[str], wanted: str) -> str | None:
    """The first port whose name contains `wanted` (any case); '' = the first that isn't a Through port."""
    if not wanted:
        return next((n for n in names if "through" not in n.lower()), None)
    return next((n for n in names if wanted.lower() in n.lower()), None)


def alsa_subscribed(client_name: str, port_name: str, direction: str,
                    table: str = "/proc/asound/seq/clients") -> bool | None:
    """Is a port of our ALSA client (by name) still subscribed to `port_name`, whose address
    rtmidi puts at the end of its name ("Synth:Synth MIDI 1 24:0")? None where the kernel's
    sequencer table cannot be read or the name has no address: then the port list alone decides."""
    address = port_name.rsplit(" ", 1)[-1]
    if not re.fullmatch(r"\d+:\d+", address):
        return None
    try:
        text = open(table).read()
    except OSError:
        return None
    label = "Connecting To:" if direction == "output" else "Connected From:"
    ours = False
    for line in text.splitlines():
        if line.startswith("Client "):
            ours = f': "{client_name}" ' in line
        elif ours and line.strip().startswith(label):
            peers = {p.split("[")[0].strip() for p in line.split(":", 1)[1].split(",")}
            if address in peers:
                return True
    return False


class WatchedPort:
    """A MIDI port found by a substring of its name, reopened whenever it comes back.

    Subclasses say which rtmidi class they are (`client_class`) and what to do on connecting
    (`_on_connect`) and before the port closes or after it vanished (`_on_close`, `_on_vanish`).
    Use as a context manager, or call `close()`.
    """

    client_class: type = rtmidi.MidiOut
    direction = "output"
    connected_text = "playing to port '{name}' ({api})"

    def __init__(self, api: str, wanted: str = "", retry_seconds: float = 1.0, client_name: str = "playbach"):
        self.api, self.wanted, self.retry_seconds = api, wanted, retry_seconds
        self.rtapi = check_api(api)
        self.client_name = client_name
        self.client = None          # the rtmidi client, made on the first look
        self.name: str | None = None  # the open port's name, None while disconnected
        self.watching = True        # False for a virtual port: nothing to look for
        self.last_check = float("-inf")
        self.state = ""

    @property
    def connected(self) -> bool:
        return self.name is not None

    def _set_state(self, text: str, level: int) -> None:
        if text != self.state:
            log.log(level, "%s", text)
            self.state = text

    def _make_client(self) -> bool:
        if self.client is None:
            try:
                self.client = self.client_class(self.rtapi, name=self.client_name)
            except rtmidi.SystemError:   # e.g. the JACK server not started yet, no /dev/snd/seq
                self._set_state(f"the {self.api} MIDI system is not running; retrying every "
                                f"{self.retry_seconds:g} s", logging.WARNING)
                return False
        return True

    def open_virtual(self, name: str) -> None:
        """Create a port others connect to, instead of looking for one."""
        self.watching = False
        if not self._make_client():
            raise UserError(f"cannot create virtual port '{name}': the {self.api} MIDI system is not running")
        self.client.open_virtual_port(name)
        self.name = name
        self._set_state(f"virtual {self.direction} port '{name}' open", logging.INFO)
        self._on_connect()

    def poll(self, now: float) -> None:
        """Look at the port list now and then: notice a vanished port, open a (re)appeared one."""
        interval = CHECK_CONNECTED if self.connected else self.retry_seconds
        if not self.watching or now - self.last_check < interval:
            return
        self.last_check = now
        if not self._make_client():
            return
        try:
            names = self.client.get_ports()
        except rtmidi.RtMidiError as e:   # a port vanished while rtmidi listed it: look again later
            log.debug("listing %s ports failed: %s", self.api, e)
            return
        if self.connected:
            if self.name not in names:
                self._lose(f"{self.direction} port '{self.name}' vanished; waiting for it to come back")
            elif self.api == "alsa" and alsa_subscribed(self.client_name, self.name, self.direction) is False:
                # a USB synth unplugged and back between two looks comes back under the same
                # name and address, but the kernel dropped our subscription with the old port
                self._lose(f"{self.direction} port '{self.name}' was unplugged and is back; reconnecting")
            return
        name = find_port(names, self.wanted)
        if name is None:
            self._set_state(f"no MIDI {self.direction} port matching '{self.wanted}' ({self.api}); "
                            f"ports: {names}; retrying every {self.retry_seconds:g} s", logging.WARNING)
            return
        try:
            self.client.open_port(names.index(name), self.direction)
        except (rtmidi.RtMidiError, ValueError) as e:   # it went away between the list and the open
            self._set_state(f"cannot open port '{name}': {e}", logging.WARNING)
            return
        self.name = name
        self._set_state(self.connected_text.format(name=name, api=self.api), logging.INFO)
        self._on_connect()

    def wait(self, should_stop: Callable[[], bool], idle: Callable[[], None] = lambda: None) -> bool:
        """Block until the port is there (True) or `should_stop()` (False), calling `idle` meanwhile."""
        while not self.connected:
            if should_stop():
                return False
            self.poll(time.monotonic())
            idle()
            if not self.connected:
                time.sleep(0.05)
        return True

    def _lose(self, why: str) -> None:
        self._set_state(why, logging.WARNING)
        self._on_vanish()
        self._close_port()

    def _close_port(self) -> None:
        try:
            self.client.close_port()
        except Exception:  # closing a dead port may fail; it is gone either way
            pass
        self.name = None

    def close(self) -> None:
        if self.connected:
            self._on_close()
            self._close_port()
        if self.client is not None:
            self.client.delete()
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what subclasses add -----------------------------------------------------------------
    def _on_connect(self) -> None:
        pass

    def _on_vanish(self) -> None:
        pass

    def _on_close(self) -> None:
        pass


class MidiOutput(WatchedPort):
    """Sends notes, each on its channel, to one port, surviving the port coming and going; every
    note it struck is ended at the receiver before the port closes.

    `channel` is where a note without one goes and `channels` every channel notes may use (wire
    channels, 0..15); `programs` the (channel, program) changes sent on each connect (default:
    `program` on `channel`, none for -1); `on_sent` is told the bytes of every note message sent
    (the thru filter knows our own notes by it)."""

    def __init__(self, api: str, port: str = "", virtual_port: str = "", channel: int = 0,
                 program: int = -1, velocity_scale: float = 1.0, retry_seconds: float = 1.0,
                 channels: Sequence[int] = (), programs: Sequence[tuple[int, int]] | None = None,
                 on_sent: Callable[[list[int]], None] | None = None):
        super().__init__(api, port, retry_seconds, client_name="playbach")
        self.channel, self.velocity_scale, self.on_sent = channel, velocity_scale, on_sent
        self.programs = list(programs) if programs is not None else ([(channel, program)] if program >= 0 else [])
        self.sounding: set[tuple[int, int]] = set()   # (channel, pitch)
        self.struck = False                            # a note_on sent since the last all_notes_off
        self.channels_used: set[int] = {channel, *channels}
        if virtual_port:
            self.open_virtual(virtual_port)

    def _on_connect(self) -> None:
        """Fresh connection: silence whatever the receiver had left, then set the instruments."""
        self.sounding.clear()
        self.all_notes_off()
        for channel, program in self.programs:
            self._send(mido.Message("program_change", program=program, channel=channel))

    def _on_vanish(self) -> None:
        self.sounding.clear()   # the receiver is gone; it gets all-notes-off when it is back

    def _on_close(self) -> None:
        self.all_notes_off()
        time.sleep(DRAIN_SECONDS)

    def _send(self, msg: mido.Message) -> None:
        if self.send_raw(msg.bytes()):
            self.channels_used.add(msg.channel)

    def send_raw(self, data: list[int]) -> bool:
        """Send bytes as they are (MIDI clock has no channel); False if not sent."""
        if not self.connected:
            return False
        try:
            self.client.send_message(data)
        except Exception as e:  # rtmidi raises on a broken connection
            self._lose(f"sending to '{self.name}' failed ({e}); waiting for the port")
            return False
        return True

    def send(self, messages: Sequence[tuple]) -> None:
        """(kind, pitch, velocity, channel) tuples from the scheduler (channel left out: `channel`);
        dropped while disconnected."""
        for kind, pitch, velocity, *rest in messages:
            channel = rest[0] if rest else self.channel
            if kind == "note_on":
                velocity = max(1, min(127, round(velocity * self.velocity_scale)))
                self.sounding.add((channel, pitch))
                self.struck = True
            else:
                self.sounding.discard((channel, pitch))
            self._send_note(mido.Message(kind, note=pitch, velocity=velocity, channel=channel))

    def _send_note(self, msg: mido.Message) -> None:
        self._send(msg)
        if self.on_sent is not None:
            self.on_sent(msg.bytes())

    def all_notes_off(self) -> None:
        """Explicit note_offs for what we left sounding, then CC 123 on every channel we used."""
        for channel, pitch in sorted(self.sounding):
            self._send_note(mido.Message("note_off", note=pitch, velocity=0, channel=channel))
        self.sounding.clear()
        self.struck = False
        for channel in sorted(self.channels_used):
            self._send(mido.Message("control_change", control=123, value=0, channel=channel))
