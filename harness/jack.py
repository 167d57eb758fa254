"""A private JACK server on the dummy driver (no sound card needed), FluidSynth on it, and a
timestamping MIDI receiver: the real MIDI parts the tests and the live bench play into.

The server gets its own name (JACK_DEFAULT_SERVER) so parallel runs don't meet, and
JACK_NO_START_SERVER so no client ever starts a server behind our back.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import rtmidi

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


def jack_env(server: str) -> dict[str, str]:
    return {"JACK_DEFAULT_SERVER": server, "JACK_NO_START_SERVER": "1", "JACK_NO_AUDIO_RESERVATION": "1"}


def use_server(server: str) -> None:
    """Point this process's JACK clients (rtmidi) at `server`."""
    os.environ.update(jack_env(server))


def _wait_for(check, timeout: float, what: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        if check():
            return
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} not ready after {timeout:g} s: {log_path.read_text()[-2000:]}")


def jack_ports() -> list[str]:
    """MIDI input ports of the current server ([] if it isn't up)."""
    try:
        out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="playbach-probe")
    except rtmidi.SystemError:
        return []
    try:
        return out.get_ports()
    finally:
        out.delete()


class JackServer:
    """`jackd -d dummy` under a unique name; use as a context manager."""

    def __init__(self, name: str, log_dir: Path, rate: int = 48000, period: int = 256, realtime: bool = True):
        if shutil.which("jackd") is None:
            raise RuntimeError("jackd is not installed (Debian package jackd2; scripts/setup.sh installs it)")
        self.name, self.log_path = name, Path(log_dir) / f"jackd-{name}.log"
        # this process's clients follow the newest server until it stops, then the one before
        # (a bench's server inside a test session must not leave the session's clients pointing at it)
        self.saved_env = {k: os.environ.get(k) for k in jack_env(name)}
        use_server(name)
        env = {**os.environ, **jack_env(name)}
        self.log_file = open(self.log_path, "w")
        # realtime (SCHED_FIFO, as root) keeps JACK's and its clients' process threads on time on a
        # busy machine; where that isn't allowed jackd says so in its log and runs without it
        flags = [] if realtime else ["--no-realtime"]
        self.proc = subprocess.Popen(["jackd", *flags, "-d", "dummy", "-r", str(rate), "-p", str(period)],
                                     env=env, stdout=self.log_file, stderr=subprocess.STDOUT)
        _wait_for(self._up, 15, "jackd", self.proc, self.log_path)

    def _up(self) -> bool:
        try:
            rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="playbach-probe").delete()
            return True
        except rtmidi.SystemError:
            return False

    def env(self) -> dict[str, str]:
        return {**os.environ, **jack_env(self.name)}

    def stop(self) -> None:
        stop_process(self.proc)
        self.log_file.close()
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __enter__(self) -> "JackServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FluidSynth:
    """FluidSynth on the JACK server; its MIDI input is the port 'fluidsynth-midi:midi_00'."""

    PORT = "fluidsynth-midi"

    def __init__(self, server: JackServer):
        self.log_path = server.log_path.with_name(f"fluidsynth-{server.name}.log")
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["fluidsynth", "-is", "-a", "jack", "-m", "jack", "-o", "midi.autoconnect=0", str(SOUNDFONT)],
            env=server.env(), stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT)
        _wait_for(lambda: any(self.PORT in p for p in jack_ports()), 20, "fluidsynth", self.proc, self.log_path)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log_file.close()


class Receiver:
    """A JACK MIDI input port of our own that stamps every message with time.monotonic()."""

    def __init__(self, client: str = "playbach-rec", port: str = "in", timing: bool = False):
        """timing: keep MIDI clock messages (a sent clock is measured), else they are dropped."""
        self.client, self.port_name = client, port
        self.messages: list[tuple[float, list[int]]] = []
        self.lock = threading.Lock()
        self.midi_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=client)
        self.midi_in.ignore_types(sysex=True, timing=not timing, active_sense=True)
        self.midi_in.set_callback(self._stamp)
        self.midi_in.open_virtual_port(port)

    @property
    def name(self) -> str:
        return f"{self.client}:{self.port_name}"

    def _stamp(self, event, _data) -> None:
        now = time.monotonic()
        with self.lock:
            self.messages.append((now, event[0]))

    def taken(self) -> list[tuple[float, list[int]]]:
        with self.lock:
            return list(self.messages)

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def close(self) -> None:
        self.midi_in.cancel_callback()
        self.midi_in.close_port()
        self.midi_in.delete()
