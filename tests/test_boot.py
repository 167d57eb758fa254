"""Boot and play: the daemon started exactly as the installed playbach.service says, the way
systemd would start it, playing into a real JACK MIDI port.

systemd itself is not PID 1 here, so the test plays its part: it reads ExecStart and
Environment= from the unit install.sh wrote, maps /opt/playbach and /etc/playbach into the
temporary root, binds its own NOTIFY_SOCKET, sets WATCHDOG_USEC from WatchdogSec=, and applies
the parts of the sandbox a process can apply to itself before exec: MemoryDenyWriteExecute=
(prctl PR_SET_MDWE, the kernel feature systemd uses for it), NoNewPrivileges= and UMask=.
The output port is a JACK one (no ALSA card here), so --midi-api/--port are added as flags, as
is --bundle: the installed config names /opt/playbach/models/default, which is not mapped.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
import time
from pathlib import Path

from fixtures_appliance import read_unit, unit_path
from fixtures_midi import assert_no_stuck_notes

# prctl() the sandbox settings onto ourselves, then exec the unit's command line.
SANDBOX_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1
assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs"
assert libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0, "PR_SET_MDWE (Linux >= 6.3)"
os.umask(0o077)
os.execv(sys.argv[1], sys.argv[1:])
"""


def service_command(root: Path) -> tuple[list[str], dict[str, str], float]:
    """ExecStart with its paths mapped into root, Environment=, and WatchdogSec= in seconds."""
    unit = read_unit(unit_path(root))
    argv = [str(root / a.lstrip("/")) if a.startswith(("/opt/playbach", "/etc/playbach")) else a
            for a in shlex.split(unit["Service.ExecStart"][-1])]
    env = dict(v.split("=", 1) for line in unit.get("Service.Environment", []) for v in shlex.split(line))
    return argv, env, float(unit["Service.WatchdogSec"][-1])


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket collecting sd_notify messages."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float, proc: subprocess.Popen, log: Path) -> float:
        """Seconds until a message holding `line` arrives; fails if the daemon dies first."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if any(line in m.splitlines() for m in self.messages):
                return time.monotonic() - start
            self.sock.settimeout(0.2)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                assert proc.poll() is None, f"daemon exited {proc.returncode}:\n{log.read_text()}"
        raise AssertionError(f"no {line} in {timeout:g} s; got {self.messages}\n{log.read_text()}")

    def close(self) -> None:
        self.sock.close()


def start_daemon(root: Path, extra: list[str], notify: NotifySocket, log: Path) -> subprocess.Popen:
    argv, unit_env, watchdog_sec = service_command(root)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(unit_env, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(int(watchdog_sec * 1e6)))
    return subprocess.Popen([sys.executable, "-c", SANDBOX_EXEC, *argv, *extra], env=env,
                            stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT)


def note_ons(messages) -> list[int]:
    return [m[1] for _, m in messages if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[2] > 0]


def test_installed_service_reports_ready_plays_and_stops_cleanly(installed_root, jack_server, receiver, tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    log = tmp_path / "daemon.log"
    bundle = installed_root / "opt/playbach/models/default"
    proc = start_daemon(installed_root, ["--bundle", str(bundle), "--midi-api", "jack",
                                         "--port", receiver.name, "--seed", "1"], notify, log)
    try:
        notify.wait_for("READY=1", 90, proc, log)
        notify.wait_for("WATCHDOG=1", 5, proc, log)
        deadline = time.monotonic() + 30
        while len(note_ons(receiver.taken())) < 8 and time.monotonic() < deadline:
            assert proc.poll() is None, f"daemon exited {proc.returncode}:\n{log.read_text()}"
            time.sleep(0.1)
        played = note_ons(receiver.taken())
        assert len(played) >= 8, f"only {len(played)} notes in 30 s after READY:\n{log.read_text()}"

        proc.send_signal(signal.SIGTERM)      # systemctl stop
        assert proc.wait(timeout=15) == 0, log.read_text()
        notify.wait_for("STOPPING=1", 2, proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    # stopped cleanly: every note_on ended by its note_off or a later all-notes-off on its channel
    messages = [m for _, m in receiver.taken()]
    assert assert_no_stuck_notes(messages) == len(note_ons(receiver.taken()))
    # what it played is what the installed config and bundle say: the config's channel and GM
    # program (sent before the first note), notes and velocities from the bundle's vocabulary
    config = tomllib.loads((installed_root / "etc/playbach/config.toml").read_text())
    vocab = json.loads((bundle / "bundle.json").read_text())["codec"]["vocab"]
    status = {m[0] for m in messages if m[0] & 0xF0 in (0x80, 0x90)}
    assert status <= {0x80 | (config["channel"] - 1), 0x90 | (config["channel"] - 1)}, status
    first_note = next(i for i, m in enumerate(messages) if m[0] & 0xF0 == 0x90)
    assert [0xC0 | (config["channel"] - 1), config["program"]] in messages[:first_note], messages[:first_note + 1]
    ons = [m for m in messages if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[2] > 0]
    assert {m[1] for m in ons} <= set(vocab["pitch"]), sorted({m[1] for m in ons} - set(vocab["pitch"]))
    assert {m[2] for m in ons} <= set(vocab["velocity"]), sorted({m[2] for m in ons})


def test_a_broken_config_exits_2_naming_the_key_without_ready(installed_root, tmp_path):
    """systemd restarts a failed daemon only StartLimitBurst= times: the daemon's part is to
    fail at once, with the key in the journal, and never claim READY."""
    notify = NotifySocket(tmp_path / "notify")
    config = tmp_path / "config.toml"
    config.write_text((installed_root / "etc/playbach/config.toml").read_text() + "\ntempo = 90\n")
    log = tmp_path / "daemon.log"
    proc = start_daemon(installed_root, ["--config", str(config)], notify, log)
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
    notify.sock.settimeout(0.1)
    try:
        notify.messages.append(notify.sock.recv(4096).decode())
    except socket.timeout:
        pass
    notify.close()
    assert not any("READY=1" in m for m in notify.messages)
    assert "unknown key 'tempo'" in log.read_text()
