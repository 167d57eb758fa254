"""The player as a subprocess for the device tests: `play`, `Running` (its log read as it comes),
and what the tests read of the messages a JACK receiver took. A `Running` player a test leaves
behind (a failed assert before its stop) is killed after the test, so it cannot play into the next."""
import subprocess
import sys
import threading
import signal
import time

import pytest

_alive: list = []


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll `condition` until it gives something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _reap_players():
    yield
    while _alive:
        proc = _alive.pop().proc
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def play(bundle, *args, env=None, **popen):
    cmd = [sys.executable, "-m", "playbach.cli", "play", "--bundle", str(bundle), "--midi-api", "jack",
           "--accelerator", "cpu", "--seed", "1", "--retry-seconds", "0.2", *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc, timeout=30):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


class Running:
    """A player subprocess whose log is read as it comes, so a test can wait for what it says."""

    def __init__(self, bundle, *args, env):
        self.proc = play(bundle, *args, env=env)
        _alive.append(self)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text, timeout=30.0):
        deadline = time.monotonic() + timeout
        while text not in self.log:
            assert self.proc.poll() is None and time.monotonic() < deadline, f"never said {text!r}:\n{self.log}"
            time.sleep(0.02)

    def stop(self, signum=signal.SIGTERM, timeout=10.0):
        """Signal it; returns (exit code, seconds it took to exit)."""
        sent = time.monotonic()
        self.proc.send_signal(signum)
        rc = self.proc.wait(timeout)
        took = time.monotonic() - sent
        self.reader.join(5)
        return rc, took


def note_ons(messages):
    return [(t, m[1]) for t, m in messages if m[0] & 0xF0 == 0x90 and m[2] > 0]


def all_notes_off(messages):
    return [t for t, m in messages if m[0] & 0xF0 == 0xB0 and m[1] == 123]


def assert_balanced(messages):
    """Every note_on has its note_off, in order, per pitch; nothing left sounding."""
    sounding = {}
    for t, m in messages:
        kind = m[0] & 0xF0
        if kind == 0x90 and m[2] > 0:
            assert m[1] not in sounding, f"pitch {m[1]} struck again without a note_off"
            sounding[m[1]] = t
        elif kind in (0x80, 0x90):
            assert sounding.pop(m[1], None) is not None, f"note_off of pitch {m[1]} that was not sounding"
    assert not sounding, f"left sounding: {sorted(sounding)}"
