"""Which MIDI channel each note goes out on, and what passes through from the keyboard.

A chorale is four voices and a synth owner may want each on its own sound: four channels of one
synth (each with its program), or two synths listening to two channels each. With `voices =
"four"` a note's voice is read from the notes before it by the same slot rule the model's voice
context uses (playbach/voices.py: soprano slot 0 .. bass slot 3), so the routing needs no voice
field in the event and follows what the model meant by its voices. With `voices = "one"` every
note goes to `channel`.

`thru` passes what arrives on the input port to the output, as a keyboard player expects a sound
module to do, except the player's own notes coming back (a synth or a MIDI merger that echoes
its input would otherwise loop them) and the messages that are not a player's: clock, transport
and SysEx.

Channels in the settings are 1..16 as synths print them; on the wire they are 0..15.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Sequence

from playbach.voices import SLOTS, VoiceTracker

ECHO_SECONDS = 0.5       # a note of ours that comes back later than this is taken as the player's own
ECHO_KEEP = 512          # notes remembered for that (a few seconds of dense music)
LENGTHS = {0x80: 3, 0x90: 3, 0xA0: 3, 0xB0: 3, 0xC0: 2, 0xD0: 2, 0xE0: 3}   # a channel message's bytes, by kind


class Voicing:
    """The channel of each note, in the order the notes are generated."""

    def __init__(self, voices: str, channel: int, channels: Sequence[int] = (1, 2, 3, 4)) -> None:
        if voices not in ("one", "four"):
            raise ValueError(f"voices must be 'one' or 'four', not {voices!r}")
        if voices == "four" and len(channels) != SLOTS:
            raise ValueError(f"voices = 'four' needs {SLOTS} channels, got {len(channels)}")
        self.voices = voices
        self.channel = channel - 1
        self.channels = [c - 1 for c in channels]
        self.tracker = VoiceTracker(SLOTS)

    def used(self) -> list[int]:
        """The wire channels notes may go out on."""
        return sorted(set(self.channels)) if self.voices == "four" else [self.channel]

    def channel_of(self, onset: int, pitch: int, duration: int) -> int:
        """Where this note goes: `onset` is its ticks after the previous note's, as generated."""
        if self.voices == "one":
            return self.channel
        slot, _, _ = self.tracker.feed(onset, pitch, duration)
        return self.channels[slot]

    def reset(self) -> None:
        """A new take (or a restart after panic): no voice is sounding."""
        self.tracker.reset()


def program_changes(voicing: Voicing, program: int, programs: Sequence[int] = ()) -> list[tuple[int, int]]:
    """(wire channel, program) to send when a synth is found: `programs` one per voice channel
    (-1: leave that channel's sound alone), else `program` on every channel used (-1: none)."""
    if voicing.voices == "four" and programs:
        return [(c, p) for c, p in zip(voicing.channels, programs) if p >= 0]
    return [(c, program) for c in voicing.used()] if program >= 0 else []


class Thru:
    """Decides which incoming messages pass through to the output."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.sent: deque[tuple[float, int, int]] = deque(maxlen=ECHO_KEEP)   # (when, status, note)

    def note_sent(self, data: Sequence[int]) -> None:
        """Remember a note message of ours, to know it if it comes back."""
        if len(data) == 3 and 0x80 <= data[0] < 0xA0:
            self.sent.append((self.clock(), data[0], data[1]))

    def passes(self, data: Sequence[int]) -> bool:
        """True for a channel message of the keyboard's; False for an echo of ours, clock,
        transport, SysEx and anything malformed."""
        if not data or LENGTHS.get(data[0] & 0xF0) != len(data) or any(not 0 <= b < 0x80 for b in data[1:]):
            return False
        if 0x80 <= data[0] < 0xA0 and len(data) == 3:
            now = self.clock()
            while self.sent and now - self.sent[0][0] > ECHO_SECONDS:
                self.sent.popleft()
            for entry in self.sent:
                if entry[1:] == (data[0], data[1]):
                    self.sent.remove(entry)
                    return False
        return True
