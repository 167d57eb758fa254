"""playbach.service's LimitRTTIME=: the kernel ends a realtime task that runs too long without
sleeping. The real kernel here (SCHED_FIFO and RLIMIT_RTTIME, as root): the play loop sleeps often
enough to live under a limit a tenth of the unit's, long work (loading a bundle on a restart from
the page) is done at normal priority by `normal_priority()`, and the same work at FIFO is killed,
which is what the limit is for."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import pytest
from fixtures_appliance import REPO, SHIPPED_BUNDLE, read_unit
from fixtures_midi import assert_no_stuck_notes
from fixtures_player import finish, note_ons, play

UNIT = REPO / "systemd" / "playbach.service"


def unit_rttime() -> tuple[float, float]:
    value = {k: v[-1] for k, v in read_unit(UNIT).items()}["Service.LimitRTTIME"]
    soft, hard = (float(part.rstrip("s")) for part in value.split(":"))
    return soft, hard


def realtime_allowed() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as e:
        pytest.skip(f"SCHED_FIFO not allowed here ({e}): the limit cannot be tried")


WORK = """
import os, resource, sys, time
from playbach.device.process import normal_priority
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
resource.setrlimit(resource.RLIMIT_RTTIME, (300_000, 600_000))   # 0.3 s, 0.6 s
def work():   # a bundle load's worth of CPU without sleeping
    start = time.process_time()
    while time.process_time() - start < 1.0:
        pass
if sys.argv[1] == "normal":
    with normal_priority():
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        work()
else:
    work()
print(os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
"""


def test_long_work_at_normal_priority_lives_under_the_limit_and_at_fifo_does_not():
    realtime_allowed()
    done = subprocess.run([sys.executable, "-c", WORK, "normal"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(os.SCHED_FIFO), "5"], "the realtime class was not restored"
    killed = subprocess.run([sys.executable, "-c", WORK, "fifo"], capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGXCPU, (killed.returncode, killed.stderr)


def test_the_unit_limits_realtime_cpu_below_its_watchdog():
    soft, hard = unit_rttime()
    watchdog = float({k: v[-1] for k, v in read_unit(UNIT).items()}["Service.WatchdogSec"])
    assert 0 < soft < hard < watchdog, (soft, hard, watchdog)


@pytest.mark.midi
def test_the_play_loop_at_fifo_lives_under_a_tenth_of_the_units_limit(jack_server, receiver):
    realtime_allowed()
    soft, hard = unit_rttime()
    limit = (round(soft * 1e5), round(hard * 1e5))   # a tenth, in microseconds

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_RTTIME, limit)
    proc = play(SHIPPED_BUNDLE, "--port", receiver.name, "--bpm", 240, "--seconds", 12,
                "--realtime-priority", 20, "--control-socket", "", env=jack_server.env(), preexec_fn=limited)
    rc, out = finish(proc, timeout=120)
    time.sleep(0.2)   # the receiver's last JACK cycles
    assert rc == 0, f"exit {rc} under RLIMIT_RTTIME {limit} us:\n{out}"
    assert "realtime scheduling at priority 20" in out, out
    messages = receiver.taken()
    assert len(note_ons(messages)) > 40, out
    assert_no_stuck_notes(messages)
