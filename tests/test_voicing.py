"""Channels and the rig (issue 23 item 4), the parts without ports: which channel each note goes
to (device/voicing.py) and what passes through from the keyboard."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playbach.device.voicing import ECHO_SECONDS, Thru, Voicing, program_changes
from playbach.voices import features

# a four-part chord (bass, tenor, alto, soprano as they are generated: ascending), then the bass
# and the soprano move
BAR = [[0, 48, 4, 64], [0, 55, 8, 64], [0, 64, 8, 64], [0, 72, 4, 64], [4, 50, 4, 64], [0, 74, 4, 64]]


def test_one_voice_is_every_note_on_the_channel():
    voicing = Voicing("one", channel=10)
    assert [voicing.channel_of(o, p, d) for o, p, d, _ in BAR] == [9] * len(BAR)
    assert voicing.used() == [9]


def test_four_voices_each_on_its_channel_soprano_first():
    voicing = Voicing("four", channel=1, channels=[1, 2, 3, 4])
    wire = [voicing.channel_of(o, p, d) for o, p, d, _ in BAR]
    # bass on channel 4, tenor 3, alto 2, soprano 1; the moving bass and soprano keep theirs
    assert wire == [3, 2, 1, 0, 3, 0]
    # the same rule as the model's voice context reads
    assert wire == [[0, 1, 2, 3][slot] for slot in features(np.array(BAR))[:, 0]]
    voicing.reset()
    assert voicing.channel_of(0, 60, 4) == 3, "after a reset the first note is a lowest voice again"


def test_two_synths_of_two_channels_each():
    voicing = Voicing("four", channel=1, channels=[1, 1, 2, 2])
    assert [voicing.channel_of(o, p, d) for o, p, d, _ in BAR] == [1, 1, 0, 0, 1, 0]
    assert voicing.used() == [0, 1]


@pytest.mark.parametrize("voices, channels", [("three", (1, 2, 3, 4)), ("four", (1, 2, 3))])
def test_a_wrong_voicing_is_refused(voices, channels):
    with pytest.raises(ValueError):
        Voicing(voices, 1, channels)


def test_program_changes():
    four = Voicing("four", 1, [1, 2, 3, 4])
    assert program_changes(four, 6, [52, 53, -1, 32]) == [(0, 52), (1, 53), (3, 32)]
    assert program_changes(four, 6) == [(0, 6), (1, 6), (2, 6), (3, 6)]
    assert program_changes(four, -1) == []
    assert program_changes(Voicing("one", 3), 19) == [(2, 19)] and program_changes(Voicing("one", 3), -1) == []


def test_thru_passes_the_keyboard_and_never_our_own_notes_back():
    now = [0.0]
    thru = Thru(clock=lambda: now[0])
    thru.note_sent([0x90, 60, 80])
    assert not thru.passes([0x90, 60, 80]), "our own note came back and was passed on"
    assert thru.passes([0x90, 60, 80]), "a second 60 is the keyboard's"
    assert thru.passes([0x91, 62, 90]) and thru.passes([0xB0, 1, 64]) and thru.passes([0xE0, 0, 64])
    thru.note_sent([0x80, 61, 0])
    now[0] += ECHO_SECONDS + 0.1
    assert thru.passes([0x80, 61, 0]), "an echo window long gone: the keyboard's own note_off"
    for message in ([0xF8], [0xFA], [0xF0, 1, 2, 0xF7], [0x90, 60], [0x90, 200, 1], [], [0xC0, 1, 2]):
        assert not thru.passes(message), message


@settings(max_examples=300, deadline=500)
@given(st.lists(st.lists(st.integers(0, 255), max_size=5), max_size=20))
def test_thru_takes_any_bytes_and_passes_only_whole_channel_messages(messages):
    thru = Thru()
    for data in messages:
        thru.note_sent(data)
        if thru.passes(data):
            assert 0x80 <= data[0] < 0xF0 and all(b < 0x80 for b in data[1:])
            assert len(data) == (2 if data[0] & 0xF0 in (0xC0, 0xD0) else 3)
