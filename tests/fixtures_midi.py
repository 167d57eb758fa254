"""Fixtures of the device: real MIDI parts on a private JACK server (dummy driver, no sound card).

`jack_server`   jackd -d dummy under a unique name (JACK_DEFAULT_SERVER), one per test session
`fluidsynth`    FluidSynth on that server; its MIDI input is `fluidsynth-midi:midi_00`
`receiver`      a JACK MIDI input port of the test's own that stamps each message with
                time.monotonic() (port `playbach-rec-<n>:in`)
`play_bundle`   the bundle the device tests play: the converter's `tiny_bundle`, or the folder
                in PLAYBACH_TEST_BUNDLE (to iterate on the player without converting again)

jackd and fluidsynth are Debian packages that scripts/setup.sh installs, so a missing one fails
loudly instead of skipping.
"""
import itertools
import os

import pytest

from playbach.harness import jack

_receivers = itertools.count()


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory):
    server = jack.JackServer(f"playbach-test-{os.getpid()}", tmp_path_factory.mktemp("jack"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fluidsynth(jack_server):
    synth = jack.FluidSynth(jack_server)
    yield synth
    synth.stop()


@pytest.fixture
def receiver(jack_server):
    rec = jack.Receiver(client=f"playbach-rec-{next(_receivers)}")
    yield rec
    rec.close()


@pytest.fixture(scope="session")
def play_bundle(request):
    if os.environ.get("PLAYBACH_TEST_BUNDLE"):
        return os.environ["PLAYBACH_TEST_BUNDLE"]
    return request.getfixturevalue("tiny_bundle")
