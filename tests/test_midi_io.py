"""The ALSA subscription check that notices a USB synth unplugged and back between two looks.

The table is the kernel sequencer's own (/proc/asound/seq/clients), written here as Linux 6.1
prints it: after a replug the synth's port has its old name and address again, but the kernel
dropped the subscription with the old port, so only the table tells the two apart.
"""
import rtmidi

from playbach.device.midi_io import WatchedPort, alsa_subscribed

BEFORE = """Client info
  cur  clients : 4
  peak clients : 5
  max  clients : 192

Client   0 : "System" [Kernel]
  Port   0 : "Timer" (Rwe-)
  Port   1 : "Announce" (R-e-)
    Connecting To: 128:1
Client  14 : "Midi Through" [Kernel]
  Port   0 : "Midi Through Port-0" (RWe-)
Client  24 : "PiVM Synth" [Kernel]
  Port   0 : "PiVM Synth MIDI 1" (RWeX)
    Connected From: 128:0
Client 128 : "playbach" [User]
  Port   0 : "output" (R-e-)
    Connecting To: 24:0
Client 129 : "playbach-in" [User]
  Port   0 : "input" (-We-)
    Connected From: 20:0[real:0], 24:0
"""
AFTER_REPLUG = BEFORE.replace("    Connected From: 128:0\n", "").replace("    Connecting To: 24:0\n", "")
SYNTH = "PiVM Synth:PiVM Synth MIDI 1 24:0"


def table(tmp_path, text):
    path = tmp_path / "clients"
    path.write_text(text)
    return str(path)


def test_a_live_subscription_is_seen(tmp_path):
    assert alsa_subscribed("playbach", SYNTH, "output", table(tmp_path, BEFORE)) is True
    assert alsa_subscribed("playbach-in", SYNTH, "input", table(tmp_path, BEFORE)) is True


def test_a_replugged_synth_under_its_old_name_is_not_subscribed(tmp_path):
    assert alsa_subscribed("playbach", SYNTH, "output", table(tmp_path, AFTER_REPLUG)) is False
    # another client's subscription to the same address is not ours
    assert alsa_subscribed("playbach-2", SYNTH, "output", table(tmp_path, BEFORE)) is False


def test_no_table_or_no_address_leaves_it_to_the_port_list(tmp_path):
    assert alsa_subscribed("playbach", SYNTH, "output", str(tmp_path / "missing")) is None
    assert alsa_subscribed("playbach", "fluidsynth:midi_00", "output", table(tmp_path, BEFORE)) is None


class VanishingWhileListed:
    """Stands in for an ALSA rtmidi client (no ALSA sequencer on the test machines): the synth
    vanishes while rtmidi is listing ports, which raises InvalidPortError on a real Pi."""

    def __init__(self, *args, **kwargs):
        pass

    def get_ports(self):
        raise rtmidi.InvalidPortError("MidiOutAlsa::getPortName: error looking for port name!")


def test_a_port_vanishing_while_listed_is_looked_for_again():
    class Output(WatchedPort):
        client_class = VanishingWhileListed
    port = Output("alsa", "Synth")
    port.poll(now=10.0)   # must not raise: the play loop would die, and systemd restart it
    assert not port.connected
