"""The MIDI output: a port found by name substring (or a virtual one), kept alive unattended.

mido with python-rtmidi, ALSA by default or JACK. The port list is watched through one rtmidi
client kept open for the purpose (opening a client per look would cost a JACK client each
time). When the port vanishes the output stops sending; when it is back the output reopens it,
sends the program and all-notes-off, and carries on. Each change of state is logged once.
"""
from __future__ import annotations

import logging
import time

import mido
import rtmidi

from playbach.errors import UserError

log = logging.getLogger(__name__)

APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK"}
RT_APIS = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK}
CHECK_CONNECTED = 0.5  # seconds between looks at the port list while playing


def backend(api: str) -> mido.Backend:
    if api not in APIS:
        raise UserError(f"midi_api '{api}' is not one of {', '.join(APIS)}")
    return mido.Backend(f"mido.backends.rtmidi/{APIS[api]}", load=True)


def port_lister(api: str, output: bool = True, client_name: str = "playbach-watch"):
    """An rtmidi client used only for its port list (MidiOut lists destinations), or None
    while the MIDI system is not there (e.g. the JACK server not started yet)."""
    cls = rtmidi.MidiOut if output else rtmidi.MidiIn
    try:
        return cls(RT_APIS[api], name=client_name)
    except rtmidi.SystemError:
        return None


def find_port(names: list[str], wanted: str) -> str | None:
    """The first port whose name contains `wanted` (any case); '' = the first that isn't a Through port."""
    if not wanted:
        return next((n for n in names if "through" not in n.lower()), None)
    return next((n for n in names if wanted.lower() in n.lower()), None)


def note_message(kind: str, pitch: int, velocity: int, channel: int) -> mido.Message:
    return mido.Message(kind, note=pitch, velocity=velocity, channel=channel)


class MidiOutput:
    """Sends notes on one channel to one port, surviving the port coming and going."""

    def __init__(self, api: str, port: str = "", virtual_port: str = "", channel: int = 0,
                 program: int = -1, velocity_scale: float = 1.0, retry_seconds: float = 1.0):
        self.api, self.wanted, self.virtual = api, port, virtual_port
        self.channel, self.program, self.velocity_scale = channel, program, velocity_scale
        self.retry_seconds = retry_seconds
        self.backend = backend(api)
        self.lister = None          # made on the first look at the port list
        self.port = None            # the open mido port, None while disconnected
        self.name = None            # the port's name while connected
        self.sounding: set[int] = set()
        self.channels_used: set[int] = set()
        self.last_check = float("-inf")
        self.state = ""             # logged once per change
        if virtual_port:
            self.port = self.backend.open_output(virtual_port, virtual=True)
            self.name = virtual_port
            self._set_state(f"virtual output port '{virtual_port}' open", logging.INFO)
            self._start_sound()

    @property
    def connected(self) -> bool:
        return self.port is not None

    def _set_state(self, text: str, level: int) -> None:
        if text != self.state:
            log.log(level, "%s", text)
            self.state = text

    # --- finding the port --------------------------------------------------------------------
    def poll(self, now: float) -> None:
        """Look at the port list now and then: notice a vanished port, reopen a returned one."""
        interval = CHECK_CONNECTED if self.connected else self.retry_seconds
        if self.virtual or now - self.last_check < interval:
            return
        self.last_check = now
        if self.lister is None:
            self.lister = port_lister(self.api)
            if self.lister is None:
                self._set_state(f"the {self.api} MIDI system is not running; retrying every "
                                f"{self.retry_seconds:g} s", logging.WARNING)
                return
        names = self.lister.get_ports()
        if self.connected:
            if self.name not in names:
                self._drop(f"port '{self.name}' vanished; waiting for it to come back")
            return
        name = find_port(names, self.wanted)
        if name is None:
            self._set_state(f"no MIDI output port matching '{self.wanted}' ({self.api}); ports: {names}; "
                            f"retrying every {self.retry_seconds:g} s", logging.WARNING)
            return
        try:
            self.port = self.backend.open_output(name)
        except OSError as e:  # it went away between the list and the open
            self._set_state(f"cannot open port '{name}': {e}", logging.WARNING)
            return
        self.name = name
        self._set_state(f"playing to port '{name}' ({self.api})", logging.INFO)
        self._start_sound()

    def wait(self, should_stop, idle=lambda: None) -> bool:
        """Block until the port is there (True) or `should_stop()` (False), calling `idle` meanwhile."""
        while not self.connected:
            if should_stop():
                return False
            self.poll(time.monotonic())
            idle()
            if not self.connected:
                time.sleep(0.05)
        return True

    def _start_sound(self) -> None:
        """Fresh connection: silence whatever the receiver had left, then set the instrument."""
        self.sounding.clear()
        self.all_notes_off()
        if self.program >= 0:
            self._send(mido.Message("program_change", program=self.program, channel=self.channel))

    def _drop(self, why: str) -> None:
        self._set_state(why, logging.WARNING)
        try:
            self.port.close()
        except Exception:  # closing a dead port may fail; it is gone either way
            pass
        self.port, self.name = None, None
        self.sounding.clear()

    # --- sending -----------------------------------------------------------------------------
    def _send(self, msg: mido.Message) -> None:
        if self.port is None:
            return
        try:
            self.port.send(msg)
        except Exception as e:  # rtmidi raises on a broken connection
            self._drop(f"sending to '{self.name}' failed ({e}); waiting for the port")
        else:
            self.channels_used.add(msg.channel)

    def send(self, messages: list[tuple[str, int, int]]) -> None:
        """(kind, pitch, velocity) tuples from the scheduler; dropped while disconnected."""
        for kind, pitch, velocity in messages:
            if kind == "note_on":
                velocity = max(1, min(127, round(velocity * self.velocity_scale)))
                self.sounding.add(pitch)
            else:
                self.sounding.discard(pitch)
            self._send(note_message(kind, pitch, velocity, self.channel))

    def all_notes_off(self) -> None:
        """Explicit note_offs for what we left sounding, then CC 123 on every channel we used."""
        for pitch in sorted(self.sounding):
            self._send(note_message("note_off", pitch, 0, self.channel))
        self.sounding.clear()
        for channel in sorted(self.channels_used | {self.channel}):
            self._send(mido.Message("control_change", control=123, value=0, channel=channel))

    def close(self) -> None:
        if self.port is not None:
            self.all_notes_off()
            self.port.close()
            self.port = None
        if self.lister is not None:
            self.lister.delete()
            self.lister = None
