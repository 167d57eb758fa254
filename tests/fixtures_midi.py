"""Fixtures of the device: real MIDI parts on a private JACK server (dummy driver, no sound card).

`jack_server`   jackd -d dummy under a unique name (JACK_DEFAULT_SERVER), one per test session
`fluidsynth`    FluidSynth on that server; its MIDI input is `fluidsynth-midi:midi_00`
`receiver`      a JACK MIDI input port of the test's own that stamps each message with
                time.monotonic() (port `playbach-rec-<n>:in`)
`play_bundle`   the bundle the device tests play: the converter's `tiny_bundle`, or the folder
                in PLAYBACH_TEST_BUNDLE (to iterate on the player without converting again)

jackd and fluidsynth are Debian packages that scripts/setup.sh installs; a missing one skips
locally and fails under CI (needs.missing).

`assert_no_stuck_notes(messages)` is the one check that a stream of MIDI messages leaves nothing
sounding: every note_on is ended by its note_off or by a later all-notes-off (CC 123) on its channel.
"""
import itertools
import os

import pytest
from needs import missing, need_program

from playbach.harness import jack

_receivers = itertools.count()
ALL_NOTES_OFF = 123


def assert_no_stuck_notes(messages) -> int:
    """Fail naming every (channel, note) left sounding; return how many note_ons were checked.

    `messages` are raw MIDI messages (lists of bytes) in the order they arrived, or (time,
    message) pairs as a Receiver takes them. A note_on is ended by a note_off (or note_on with
    velocity 0) of its channel and note that comes after it, or by a later CC 123 on its
    channel; a re-struck note needs one note_off per note_on.
    """
    sounding: dict[tuple[int, int], int] = {}
    note_ons = 0
    for item in messages:
        msg = item[1] if isinstance(item, tuple) else item
        if len(msg) != 3:
            continue
        kind, channel = msg[0] & 0xF0, msg[0] & 0x0F
        if kind == 0x90 and msg[2] > 0:
            note_ons += 1
            sounding[(channel, msg[1])] = sounding.get((channel, msg[1]), 0) + 1
        elif kind == 0x80 or kind == 0x90:
            if sounding.get((channel, msg[1]), 0) > 0:
                sounding[(channel, msg[1])] -= 1
        elif kind == 0xB0 and msg[1] == ALL_NOTES_OFF:
            sounding = {key: n for key, n in sounding.items() if key[0] != channel}
    stuck = sorted((channel + 1, note, n) for (channel, note), n in sounding.items() if n > 0)
    assert not stuck, f"notes left sounding (channel 1-16, note, how many): {stuck}"
    return note_ons


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory):
    need_program("jackd", "jackd2")
    server = jack.JackServer(f"playbach-test-{os.getpid()}", tmp_path_factory.mktemp("jack"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fluidsynth(jack_server):
    need_program("fluidsynth", "fluidsynth")
    if not jack.SOUNDFONT.is_file():
        missing(f"soundfont {jack.SOUNDFONT} not found (Debian package timgm6mb-soundfont)")
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
