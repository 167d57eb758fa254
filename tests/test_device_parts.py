"""The device's parts that need no bundle: config table, scheduler arithmetic, sd_notify socket."""
import argparse
import os
import re
import socket

import pytest

from playbach.cli import main
from playbach.device import config
from playbach.device.scheduler import Scheduler
from playbach.device.sdnotify import Notifier
from playbach.errors import UserError


def parse(argv, toml_text=None, tmp_path=None):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    if toml_text is not None:
        path = tmp_path / "config.toml"
        path.write_text(toml_text)
        argv = ["--config", str(path)] + argv
    return config.load(parser.parse_args(argv))


def test_defaults_file_and_flags_stack(tmp_path):
    s = parse(["--bpm", "100", "--midi-api", "jack"], 'bpm = 60\nchannel = 3\ntemperature = 1\n', tmp_path)
    assert s.bpm == 100.0                      # flag beats file
    assert s.channel == 3 and s.temperature == 1.0 and isinstance(s.temperature, float)
    assert s.midi_api == "jack" and s.accelerator == "auto"


# The config keys users' files and systemd/config.toml rely on, each with a value other than its
# default, written as TOML and as the flag's text: written out here, not derived from the key table,
# so a key that disappears, loses its flag or stops reading its value fails.
EVERY_KEY = {
    "bundle": ("'/opt/b'", "/opt/b", "/opt/b"), "model_kind": ("'windowed'", "windowed", "windowed"),
    "variant": ("'int8'", "int8", "int8"), "accelerator": ("'cpu'", "cpu", "cpu"),
    "midi_api": ("'jack'", "jack", "jack"), "port": ("'synth'", "synth", "synth"),
    "virtual_port": ("'pb'", "pb", "pb"), "channel": ("10", "10", 10), "program": ("-1", "-1", -1),
    "velocity_scale": ("0.5", "0.5", 0.5), "bpm": ("60", "60", 60.0), "temperature": ("1.5", "1.5", 1.5),
    "top_k": ("8", "8", 8), "max_repeat": ("0", "0", 0), "seed": ("7", "7", 7),
    "seconds": ("30", "30", 30.0), "record": ("'t.mid'", "t.mid", "t.mid"), "record_minutes": ("2.5", "2.5", 2.5),
    "opening": ("'2'", "2", "2"), "seed_midi": ("'s.mid'", "s.mid", "s.mid"),
    "input_port": ("'keys'", "keys", "keys"), "live_gap": ("2.5", "2.5", 2.5),
    "clock": ("'follow'", "follow", "follow"), "clock_port": ("'drum'", "drum", "drum"),
    "rhythm_temperature": ("0.5", "0.5", 0.5), "key": ("'D minor'", "D minor", "D minor"),
    "pitch_min": ("40", "40", 40), "pitch_max": ("80", "80", 80), "density": ("2", "2", 2.0),
    "cc_temperature": ("-1", "-1", -1), "cc_tempo": ("20", "20", 20), "cc_rhythm_temperature": ("21", "21", 21),
    "cc_density": ("22", "22", 22), "cc_pitch_min": ("23", "23", 23), "cc_pitch_max": ("-1", "-1", -1),
    "cc_key": ("24", "24", 24), "lookahead": ("1", "1", 1.0),
    "plan": ("4", "4", 4), "cc_plan": ("25", "25", 25),
    "realtime_priority": ("20", "20", 20), "retry_seconds": ("0.2", "0.2", 0.2),
    "stats": ("'s.json'", "s.json", "s.json"), "log_level": ("'debug'", "debug", "debug"),
    "control_socket": ("'/tmp/c.sock'", "/tmp/c.sock", "/tmp/c.sock"), "control_group": ("'pw'", "pw", "pw"),
    "overrides": ("'/var/k.json'", "/var/k.json", "/var/k.json"),
    "voices": ("'four'", "four", "four"), "channels": ("[5, 6, 7, 8]", "5,6,7,8", (5, 6, 7, 8)),
    "programs": ("[0, -1, 6, 19]", "0,-1,6,19", (0, -1, 6, 19)), "thru": ("true", None, True),
    "web_listen": ("'0.0.0.0:80'", "0.0.0.0:80", "0.0.0.0:80"), "web_token_file": ("'/t'", "/t", "/t"),
    "web_session_days": ("7", "7", 7.0), "web_hosts": ("'pi.example'", "pi.example", "pi.example"),
}


def test_every_key_has_a_flag_in_play_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["play", "--help"])
    assert done.value.code == 0
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", capsys.readouterr().out))
    assert flags == {"--help", "--verbose", "--config", "--no-thru"} | {"--" + k.replace("_", "-") for k in EVERY_KEY}


def test_every_key_is_read_from_the_file_and_from_its_flag(tmp_path):
    from_file = parse([], "".join(f"{k} = {toml}\n" for k, (toml, _, _) in EVERY_KEY.items()), tmp_path)
    # a bool's flag takes no value (text None): --thru
    flags = [a for k, (_, text, _) in EVERY_KEY.items() for a in ("--" + k.replace("_", "-"), text) if a is not None]
    from_flags = parse(flags)
    for key, (_, _, value) in EVERY_KEY.items():
        got_file, got_flag = getattr(from_file, key), getattr(from_flags, key)
        assert got_file == value and type(got_file) is type(value), (key, got_file)
        assert got_flag == value and type(got_flag) is type(value), (key, got_flag)


@pytest.mark.parametrize("text, words", [
    ("tempo = 100\n", ["unknown key 'tempo'", "bpm"]),
    ("bpm = 'fast'\n", ["'bpm'", "float"]),
    ("accelerator = 'gpu'\n", ["'accelerator'", "'auto', 'cpu', 'edgetpu'"]),
    ("channel = 17\n", ["'channel'", "[1, 16]"]),
    ("seed = true\n", ["'seed'", "int"]),
    ("bpm = [\n", ["not valid TOML"]),
])
def test_bad_config_names_the_key(tmp_path, text, words):
    with pytest.raises(UserError) as e:
        parse([], text, tmp_path)
    for w in words:
        assert w in str(e.value)
    assert "config.toml" in str(e.value)


def test_bad_flag_value_names_the_flag():
    with pytest.raises(UserError, match="--channel"):
        parse(["--channel", "0"])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(UserError, match="nope.toml"):
        config.load(argparse.Namespace(config=str(tmp_path / "nope.toml")))


def test_schedule_is_absolute_and_follows_tempo():
    s = Scheduler(ticks_per_quarter=4, bpm=120, start_time=100.0)   # a tick is 0.125 s
    for onset in (0, 4, 4, 4):
        s.add(onset, 60 + onset, 2, 80)
    assert s.time_of(8) == pytest.approx(101.0)
    s.set_bpm(60, now=100.5)                                         # at tick 4
    assert s.time_of(4) == pytest.approx(100.5) and s.time_of(8) == pytest.approx(101.5)
    assert s.lead(100.5) == pytest.approx(2.0)                       # cursor at tick 12


def test_chord_leaves_together_and_offs_come_first():
    s = Scheduler(4, 120, 0.0)
    s.add(0, 60, 4, 90)
    s.add(0, 64, 4, 90)
    s.add(4, 60, 4, 90)   # repeated pitch exactly when the first one ends
    assert s.pop_due(0.0) == [("note_on", 60, 90, 0), ("note_on", 64, 90, 0)]
    assert s.pop_due(0.4) == []
    assert s.pop_due(0.5) == [("note_off", 60, 0, 0), ("note_off", 64, 0, 0), ("note_on", 60, 90, 0)]


def test_overlapping_repeat_gets_one_note_off_each():
    played = []
    s = Scheduler(4, 120, 0.0, played.append)
    s.add(0, 60, 8, 90)
    s.add(2, 60, 8, 90)   # re-struck while still sounding
    msgs = s.pop_due(10.0)
    assert msgs == [("note_on", 60, 90, 0), ("note_off", 60, 0, 0), ("note_on", 60, 90, 0), ("note_off", 60, 0, 0)]
    assert [(p.start_tick, p.duration) for p in played] == [(0, 2), (2, 8)]
    assert [(p.on_time, p.off_time) for p in played] == [(0.0, 0.25), (0.25, 1.25)]   # 0.125 s a tick


def test_stop_ends_every_sounding_note():
    s = Scheduler(4, 120, 0.0)
    s.add(0, 60, 100, 90)
    s.add(0, 67, 100, 90)
    s.add(4, 72, 100, 90)
    s.pop_due(0.1)
    assert sorted(s.stop(0.2)) == [("note_off", 60, 0, 0), ("note_off", 67, 0, 0)]
    assert s.pop_due(100.0) == []


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_reaches_a_real_socket(tmp_path, abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = f"\0playbach-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    sock.bind(address)
    sock.settimeout(2)
    env = {"NOTIFY_SOCKET": "@" + address[1:] if abstract else address, "WATCHDOG_USEC": "200000"}
    n = Notifier(env)
    n.ready("model x")
    n.ready("again")              # only once
    n.watchdog(1.0)
    n.watchdog(1.05)              # less than half of 0.2 s later: nothing
    n.watchdog(1.1)
    got = [sock.recv(4096).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=model x", "WATCHDOG=1", "WATCHDOG=1"]
    sock.close()


def test_sd_notify_without_systemd_does_nothing():
    n = Notifier({})
    n.ready("x")
    n.watchdog(0.0)
    assert n.sock is None and n.watchdog_interval is None
