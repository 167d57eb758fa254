"""The watchdog's SIGABRT ends the take from wherever the loop is, even inside the handlers that
keep a take going: a failed send is taken for a lost port, a failed control op is logged and
answered. Either, catching the abort, would keep playing until systemd's SIGKILL, which ends no
note. The signal is real and the handler the player's; the port's client is a stand-in whose send
raises it, since a signal cannot be timed to land inside rtmidi's own send."""
import signal

import pytest

from fixtures_control import StandIn
from playbach.device.control_ops import Ops
from playbach.device.midi_io import MidiOutput
from playbach.device.signals import WatchdogAbort, abort


@pytest.fixture
def watchdog_handler():
    before = signal.signal(signal.SIGABRT, abort)
    yield
    signal.signal(signal.SIGABRT, before)


class AbortingClient:
    """An rtmidi client whose send is where the watchdog's signal lands."""

    def send_message(self, _data) -> None:
        signal.raise_signal(signal.SIGABRT)

    def close_port(self) -> None:
        pass


def test_an_abort_during_a_send_is_not_taken_for_a_lost_port(watchdog_handler):
    output = MidiOutput("jack", "nowhere")
    output.client, output.name = AbortingClient(), "synth"
    with pytest.raises(WatchdogAbort):
        output.send([("note_on", 60, 0.8)])
    assert output.connected and output.sounding == {(0, 60)}   # still there for the close's note_offs


class AbortingStandIn(StandIn):
    def pause(self, now: float) -> None:
        signal.raise_signal(signal.SIGABRT)


def test_an_abort_during_a_control_op_is_not_answered_as_a_failed_op(watchdog_handler, tmp_path):
    ops = Ops(AbortingStandIn(tmp_path))
    with pytest.raises(WatchdogAbort):
        ops.handle({"op": "pause"}, 0.0)
