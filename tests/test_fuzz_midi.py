"""Incoming MIDI fuzzed (issue 22 item 1): whatever bytes arrive on the live input or the clock
port -- running status, SysEx, truncated or overlong messages, data bytes above 127, any arrival
times -- the parse path takes them or drops them, never raises into the play loop, keeps its
bounds (a phrase of MAX_PHRASE notes at most) and turns knobs only to values the player accepts.

What stands in: rtmidi's input queue. A real port needs ALSA's sequencer (absent here) or JACK
(the slow tier's tests/test_midi_io.py); the fuzzer hands LiveInput and the clock follower the
(bytes, delta) pairs rtmidi's get_message() gives, one message per pair, as JACK delivers what a
USB cable sends -- whole, or cut short, or several run together by running status."""
from __future__ import annotations

import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from playbach import settings as pb_settings
from playbach.device.flood import MAX_PHRASE
from playbach.device.follower import Follower
from playbach.device.live_input import LiveInput

FUZZ = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
KNOBS = {getattr(pb_settings.DEFAULTS, k.cc): k for k in pb_settings.KNOBS if getattr(pb_settings.DEFAULTS, k.cc) >= 0}


class RtmidiQueue:
    """What rtmidi.MidiIn.get_message() returns: (message bytes, seconds since the last), then None."""

    def __init__(self, items):
        self.items = list(items)

    def get_message(self):
        return self.items.pop(0) if self.items else None


def status_byte():
    return st.sampled_from([0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0]).flatmap(
        lambda kind: st.integers(0, 15).map(lambda ch: kind | ch)) | st.integers(0xF0, 0xFF)


# a message: a status (or none: running status) and 0-4 data bytes, any of them possibly > 127
messages = st.tuples(st.one_of(st.none(), status_byte()), st.lists(st.integers(0, 255), max_size=4)).map(
    lambda m: ([m[0]] if m[0] is not None else []) + m[1])
sysex = st.lists(st.integers(0, 127), max_size=40).map(lambda body: [0xF0, *body, 0xF7])
deltas = st.floats(0, 5, allow_nan=False) | st.just(0.0)
streams = st.lists(st.tuples(messages | sysex | st.binary(max_size=8).map(list), deltas), max_size=60)

RUNNING_STATUS = [([0x90, 60, 100], 0.0), ([62, 100], 0.01), ([64, 0], 0.01), ([60, 0], 0.5)]
TRUNCATED = [([0x90], 0.0), ([0x90, 60], 0.0), ([0xB0, 1], 0.0), ([0xE0, 5], 0.0), ([0xF2, 1], 0.0), ([0xF2], 0.0)]
OVERLONG = [([0x90, 60, 100, 5, 7], 0.0), ([0xB0, 200, 300], 0.0), ([0xB0, 2, 127, 0], 0.0), ([0xF0, 1, 2], 0.0)]


def live_input() -> LiveInput:
    live = LiveInput("jack", "fuzz", ticks_per_quarter=4, gap=0.1, knobs=KNOBS)
    live.watching, live.name = False, "fuzz"   # connected to the stand-in queue, never looked for
    return live


@FUZZ
@given(streams, st.floats(10, 400))
@example(RUNNING_STATUS, 90.0)
@example(TRUNCATED, 90.0)
@example(OVERLONG, 90.0)
@example([([0x90, 60 + i % 12, 100], 0.0) for i in range(3000)], 90.0)
@example([([0xB0, 2, v], 0.001) for v in range(128)] + [([0xF8], 0.0)] * 50, 400.0)
def test_the_live_input_takes_or_drops_any_bytes(stream, bpm):
    live = live_input()
    live.client = RtmidiQueue(stream)
    now = 1000.0
    for step in range(4):   # drained over passes, then a silence long enough to end the phrase
        news = live.poll(now, bpm)
        assert len(live.phrase) <= MAX_PHRASE
        for name, value in news.changes.items():
            pb_settings.BY_NAME[name].check(value, "live")   # a knob turns a setting only within its range
        if news.phrase is not None:
            assert news.phrase.ndim == 2 and news.phrase.shape[1] == 4 and len(news.phrase) <= MAX_PHRASE
            assert ((news.phrase[:, 1] >= 0) & (news.phrase[:, 1] <= 127)).all()
        now += 0.05 if step < 2 else 5.0


@FUZZ
@given(streams, st.lists(st.floats(0, 0.5, allow_nan=False), min_size=1, max_size=60))
@example([([0xFA], 0.0)] + [([0xF8], 0.0)] * 40 + [([0xF2, 200, 1], 0.0), ([0xF2], 0.0), ([0xFC, 1], 0.0)], [0.02])
@example([([0xF8], 0.0)] * 60, [0.0])
def test_the_clock_follower_takes_or_drops_any_bytes(stream, gaps):
    follower = Follower(120.0)
    t = 0.0
    for i, (data, _) in enumerate(stream):
        t += gaps[i % len(gaps)]
        assert follower.feed(data, t) in (None, "start", "stop")
    assert math.isfinite(follower.bpm) and follower.position >= 0
