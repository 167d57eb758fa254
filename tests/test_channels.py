"""Channels and the rig (issue 23 item 4) at a real JACK receiver: voices = four puts each voice
of the take on its own channel, program = -1 (the default) sends no Program Change, `programs`
one per voice channel, and thru passes a keyboard's messages to the synth without doubling ours.
The take's recording holds what the synth heard: each note on its channel, the same programs."""
import json
import time

import mido
import numpy as np
import pytest
import rtmidi

from fixtures_midi import assert_no_stuck_notes
from fixtures_player import Running, finish, play, wait_until
from needs import DEFAULT
from playbach.midifile import read_midi_channels

pytestmark = pytest.mark.midi


def without_cc123(messages):
    """The messages less the final all-notes-off: every note must be ended by its own note_off."""
    return [(t, m) for t, m in messages if not (len(m) == 3 and m[0] & 0xF0 == 0xB0 and m[1] == 123)]


def program_changes(messages):
    return [(m[0] & 0x0F, m[1]) for _, m in messages if len(m) == 2 and m[0] & 0xF0 == 0xC0]


def test_four_voices_on_four_channels_in_their_registers(jack_server, receiver, tmp_path):
    """The shipped chorale model: four voices to route (the tests' tiny model learnt the cello's one line)."""
    take = tmp_path / "take.mid"
    rc, out = finish(play(DEFAULT, "--port", receiver.name, "--voices", "four", "--channels", "3,4,5,6",
                          "--programs", "52,-1,52,32", "--bpm", 200, "--seconds", 8, "--control-socket", "",
                          "--record", take, env=jack_server.env()))
    time.sleep(0.05)
    assert rc == 0, out
    messages = receiver.taken()
    assert program_changes(messages) == [(2, 52), (4, 52), (5, 32)]   # none on the alto's channel (-1)
    ons = [(m[0] & 0x0F, m[1]) for _, m in messages if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[2] > 0]
    channels = {c for c, _ in ons}
    assert channels == {2, 3, 4, 5}, channels
    mean = [np.mean([p for c, p in ons if c == ch]) for ch in (2, 3, 4, 5)]
    assert mean[0] > mean[1] > mean[2] > mean[3], mean   # soprano > alto > tenor > bass
    assert assert_no_stuck_notes(without_cc123(messages)) == len(ons)   # each note_off on its note_on's channel
    # the recording, opened in a DAW: a track per channel with its program, the notes the synth got
    midi = mido.MidiFile(str(take))
    assert midi.type == 1 and [{m.channel for m in t if m.type == "note_on"} for t in midi.tracks[1:]] == [
        {2}, {3}, {4}, {5}]
    assert [(m.channel, m.program) for t in midi.tracks for m in t if m.type == "program_change"] == [
        (2, 52), (4, 52), (5, 32)]
    assert sorted((c, p) for _, p, _, _, c in read_midi_channels(take)) == sorted(ons)


def test_no_program_change_by_default(play_bundle, jack_server, receiver):
    rc, out = finish(play(play_bundle, "--port", receiver.name, "--seconds", 1.5, "--control-socket", "",
                          env=jack_server.env()))
    time.sleep(0.05)
    assert rc == 0, out
    messages = receiver.taken()
    assert any(len(m) == 3 and m[0] == 0x90 for _, m in messages), "no notes on channel 1"
    assert program_changes(messages) == []


def test_bad_channels_exit_2_naming_the_key(play_bundle, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("voices = 'four'\nchannels = [1, 2, 17, 4]\n")
    rc, out = finish(play(play_bundle, "--config", config))
    assert rc == 2 and "'channels'" in out and "config.toml" in out, out
    rc, out = finish(play(play_bundle, "--channels", "1,2,3"))
    assert rc == 2 and "--channels" in out, out


def test_thru_passes_the_keyboard_and_never_doubles_ours(play_bundle, jack_server, receiver, tmp_path):
    keyboard = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="playbach-kbd-thru")
    keyboard.open_virtual_port("out")
    try:
        player = Running(play_bundle, "--port", receiver.name, "--input-port", "playbach-kbd-thru", "--thru",
                         "--stats", tmp_path / "stats.json", "--control-socket", "", env=jack_server.env())
        player.wait_for("listening on input port")
        wait_until(lambda: any(len(m) == 3 and m[0] == 0x90 for _, m in receiver.taken()), what="our first notes")
        keyboard.send_message([0x96, 61, 100])   # a note on channel 7, where the player sends nothing
        keyboard.send_message([0xE6, 0, 80])     # and a pitch bend
        time.sleep(0.3)
        keyboard.send_message([0x86, 61, 0])
        wait_until(lambda: any(m == [0x86, 61, 0] for _, m in receiver.taken()), what="the keyboard's note_off")
        rc, _ = player.stop()
    finally:
        keyboard.delete()
    assert rc == 0, player.log
    messages = receiver.taken()
    assert [m for _, m in messages if m[0] & 0x0F == 6] == [[0x96, 61, 100], [0xE6, 0, 80], [0x86, 61, 0]]
    ours = sum(1 for _, m in messages if len(m) == 3 and m[0] == 0x90 and m[2] > 0)
    assert ours == len(json.loads((tmp_path / "stats.json").read_text())["note_ons"])   # each of ours once
