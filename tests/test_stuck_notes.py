"""No stuck notes under load: however playing ends, every note_on reaches the synth with its end.

The shipped bundle plays into a real JACK receiver while busy loops keep both cores full. JACK
delivers what a client queued only in its next process cycle, so a port closed right after its
final note_offs loses them under load; the receiver then holds those notes forever. Several
takes per ending (`--seconds`, SIGTERM, SIGINT, and SIGABRT, which systemd's watchdog sends to a
hung player), each checked note by note.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures_midi import assert_no_stuck_notes
from needs import need_program
from playbach.harness import jack

pytestmark = pytest.mark.midi
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default"
HOGS = 4          # busy loops: twice the cores of the machine this runs on
TAKES = 3


@pytest.fixture(scope="module")
def busy_jack(tmp_path_factory):
    """A JACK server without realtime scheduling, so the busy loops can delay its cycles too."""
    need_program("jackd", "jackd2")
    with jack.JackServer(f"playbach-busy-{os.getpid()}", tmp_path_factory.mktemp("jack"), realtime=False) as server:
        yield server


@pytest.fixture
def hogs():
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(HOGS)]
    yield
    for proc in procs:
        proc.kill()
        proc.wait()


def player(receiver, seed, *args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "playbach.cli", "play", "--bundle", str(SHIPPED), "--midi-api", "jack",
         "--accelerator", "cpu", "--port", receiver.name, "--bpm", "240", "--seed", str(seed), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def settle(receiver, quiet=0.3, timeout=5.0):
    """Wait until nothing new has arrived for `quiet` seconds: what is lost by then stays lost."""
    deadline, count = time.monotonic() + timeout, -1
    while time.monotonic() < deadline and len(receiver.taken()) != count:
        count = len(receiver.taken())
        time.sleep(quiet)
    return receiver.taken()


@pytest.mark.parametrize("ending, exit_code", [("seconds", 0), ("SIGTERM", 0), ("SIGINT", 0), ("SIGABRT", 1)])
def test_every_note_ends_at_the_receiver_under_load(busy_jack, hogs, ending, exit_code):
    for take in range(TAKES):
        receiver = jack.Receiver(client=f"playbach-stuck-{ending}-{take}")
        try:
            if ending == "seconds":
                proc = player(receiver, take, "--seconds", "1.5", env=busy_jack.env())
                out, _ = proc.communicate(timeout=60)
            else:
                proc = player(receiver, take, env=busy_jack.env())
                deadline = time.monotonic() + 30
                while sum(m[0] & 0xF0 == 0x90 for _, m in receiver.taken()) < 6:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                    time.sleep(0.02)
                proc.send_signal(getattr(signal, ending))
                out, _ = proc.communicate(timeout=10)
            messages = settle(receiver)
        finally:
            receiver.close()
        assert proc.returncode == exit_code, out
        assert assert_no_stuck_notes(messages) > 0, out
