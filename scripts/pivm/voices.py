"""Four voices on four channels at the USB synth (issue 23 item 4), in the emulated Pi.

A synth owner's edits to /etc/playbach/config.toml: `voices = "four"`, `channels = [1, 2, 3, 4]`
and `programs = [52, -1, 52, 32]` (-1: leave that channel's sound). The player is restarted, plays
a while, and the config is put back. At the synth (the gadget's recorder): the Program Changes
are the three asked, none on channel 2; every note is on one of the four channels, each channel
in its voice's register (soprano above alto above tenor above bass, by mean pitch); and every
note is ended on its own channel, by its note_off or by the All Notes Off of the restart that
puts the config back. The same as tests/test_channels.py at a JACK receiver, through ALSA and USB.
"""
from __future__ import annotations

import time
from pathlib import Path

from guest import UNIT, edit_config, run, wait_for
from recorder import balance

CHANNELS = [1, 2, 3, 4]
PROGRAMS = [52, -1, 52, 32]
NOTES_WANTED = 40          # enough for each voice's mean pitch (an emulated CPU makes a few a second)
PLAY_SECONDS = 60          # at most this long for them


def four_voices_config(config: Path) -> str:
    """The user's edits for four voices; returns the file as it was."""
    return edit_config(config, {"voices": '"four"', "channels": str(CHANNELS), "programs": str(PROGRAMS)})


def four_voices_check(config: Path, recorder) -> dict:
    good = four_voices_config(config)
    start = time.monotonic()
    run("systemctl", "restart", "--no-block", UNIT)
    ons = lambda: [e for e in recorder.snapshot() if e.t > start and e.kind == "note_on"]  # noqa: E731
    wait_for(lambda: len(ons()) >= NOTES_WANTED, PLAY_SECONDS, 1)
    config.write_text(good)
    back = time.monotonic()
    run("systemctl", "restart", "--no-block", UNIT)
    # the old player plays on until it stops (its All Notes Off): the new one's first note is after that
    wait_for(lambda: recorder.first_all_off_after(back) is not None, 300, 0.2)
    stopped = recorder.first_all_off_after(back)
    after = recorder.wait_note_after(stopped, 300) if stopped is not None else None
    events = [e for e in recorder.snapshot() if start < e.t < (after or time.monotonic())]
    notes = [e for e in events if e.kind == "note_on" and e.t < back]
    f: dict = {"notes": len(notes), "back_to_one_voice_note_s": after and round(after - back, 2),
               "old_player_stopped_s": stopped and round(stopped - back, 2)}
    f["programs"] = [[e.channel + 1, e.a] for e in events if e.kind == "program" and e.t < back]
    f["channels"] = sorted({e.channel + 1 for e in notes})
    means = [sum(e.a for e in notes if e.channel + 1 == c) / max(1, sum(e.channel + 1 == c for e in notes))
             for c in CHANNELS]
    f["mean_pitch_by_channel"] = [round(m, 1) for m in means]
    f["stuck"] = [list(s) for s in balance(events).stuck()]
    f["ok"] = bool(len(notes) >= NOTES_WANTED // 2
                   and f["programs"] == [[c, p] for c, p in zip(CHANNELS, PROGRAMS) if p >= 0]
                   and f["channels"] == CHANNELS
                   and means[0] > means[1] > means[2] > means[3]
                   and not f["stuck"] and after is not None)
    return f
