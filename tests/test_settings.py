"""One set of defaults (playbach/settings.py): the same take settings in every command, and the
docs table rewritten from them."""
import argparse
import dataclasses
import inspect
import json
import subprocess
import sys

import pytest

from playbach import settings, settings_table
from playbach.cli import main
from playbach.device import config
from playbach.errors import UserError
from playbach.harness import bench, livebench
from playbach.trainer import generate

# What a take sounds like unless told otherwise, in every command (written out, not read from Settings).
TAKE = {"temperature": 1.0, "top_k": 0, "max_repeat": 64, "program": -1, "bpm": 90.0}


def defaults_of(add_arguments, *argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args(list(argv)))


def test_play_generate_and_bench_share_one_default_per_setting(tmp_path):
    empty = tmp_path / "empty.toml"    # not /etc/playbach/config.toml, which may exist here
    empty.write_text("")
    play = config.load(argparse.Namespace(**defaults_of(config.add_arguments, "--config", str(empty))))
    gen = defaults_of(generate.add_arguments, "run", "--out", "x.mid")
    for name, value in TAKE.items():
        assert getattr(play, name) == value and gen[name] == value, name
    assert defaults_of(bench.add_arguments, "bundle")["bpm"] == TAKE["bpm"]
    assert inspect.signature(livebench.run_live_bench).parameters["bpm"].default == TAKE["bpm"]
    assert play.seed == gen["seed"] == -1


def test_generate_checks_its_shared_settings_only(tmp_path, caplog):
    """--temperature 9 is refused naming the flag (exit 2) before the run is read; generate's own
    --opening (a count of events, not play's opening name) is not checked as the setting."""
    assert main(["generate", str(tmp_path / "no-run"), "--out", "x.mid", "--temperature", "9"]) == 2
    assert "--temperature" in caplog.text
    caplog.clear()
    assert main(["generate", str(tmp_path / "no-run"), "--out", "x.mid", "--opening", "8"]) == 2
    assert "run folder not found" in caplog.text


def test_settings_table_is_rewritten_between_its_markers_only():
    text = f"intro\n{settings_table.TABLE_BEGIN}\nold table\n{settings_table.TABLE_END}\nafter\n"
    once = settings_table.rewrite_table(text, "doc.md")
    assert once.startswith(f"intro\n{settings_table.TABLE_BEGIN}\n") and once.endswith(f"{settings_table.TABLE_END}\nafter\n")
    assert "old table" not in once and "| `temperature` / `--temperature` | float | 1.0 | 0 .. 5 |" in once
    assert settings_table.rewrite_table(once, "doc.md") == once
    with pytest.raises(UserError, match="doc.md: no settings table markers"):
        settings_table.rewrite_table("no markers", "doc.md")


def test_the_documented_settings_table_is_the_generated_one():
    """A setting added or changed without `python -m playbach.settings_table --markdown` fails here."""
    for name in settings_table.DOCS_WITH_TABLE:
        text = (settings.REPO_ROOT / name).read_text()
        assert settings_table.rewrite_table(text, name) == text, f"{name}: run python -m playbach.settings_table --markdown"


# Which settings a running take changes, written out: a setting that stops being live, or starts,
# fails here, and so does a knob that loses its CC setting.
LIVE = {"bpm": "cc_tempo", "temperature": "cc_temperature", "rhythm_temperature": "cc_rhythm_temperature",
        "key": "cc_key", "pitch_min": "cc_pitch_min", "pitch_max": "cc_pitch_max", "density": "cc_density",
        "top_k": None, "plan": "cc_plan"}


def test_each_setting_says_once_whether_it_is_live_and_the_lists_derive_from_that():
    assert set(settings.LIVE) == set(LIVE)
    assert {k.name: k.cc for k in settings.KNOBS} == {n: cc for n, cc in LIVE.items() if cc}
    assert all(settings.BY_NAME[n].live for n in LIVE) and sum(k.live for k in settings.KEYS) == len(LIVE)
    assert not hasattr(settings, "Key")    # a config key is a Setting; keys.Key is a musical key


def test_the_steering_defaults_are_the_settings_defaults():
    """The Improviser's steering (playbach/steering.py) holds the defaults the settings read: one place."""
    from playbach.steering import Steering
    for f in dataclasses.fields(Steering):
        assert f.name in settings.LIVE and getattr(Steering(), f.name) == getattr(settings.DEFAULTS, f.name), f.name


def test_live_settings_are_plain_data_with_range_help_and_the_value_now():
    now = dataclasses.replace(settings.DEFAULTS, bpm=120.0, key="D minor")
    rows = {r["name"]: r for r in json.loads(json.dumps(settings.live_settings(now)))}
    assert list(rows) == list(settings.LIVE)
    assert rows["bpm"] == {"name": "bpm", "type": "float", "value": 120.0, "default": 90.0, "low": 10.0,
                           "high": 400.0, "choices": None, "accepts": "float in [10.0, 400.0]",
                           "help": settings.BY_NAME["bpm"].help, "cc": 2}
    assert rows["key"]["value"] == "D minor" and len(rows["key"]["choices"]) == 24 and rows["key"]["cc"] == -1
    assert rows["top_k"]["cc"] == -1 and rows["plan"]["high"] == 64


def test_a_live_change_is_checked_whole_and_changes_nothing_when_refused():
    now = settings.DEFAULTS
    assert settings.check_live({"bpm": 100, "pitch_min": 40}, now) == {"bpm": 100.0, "pitch_min": 40}
    for changes, words in [({"bundle": "x"}, "'bundle' cannot change while playing"),
                           ({"tempo": 1}, "'tempo' is not a setting"),
                           ({"pitch_min": 80, "pitch_max": 70}, "'pitch_min' = 80 is above 'pitch_max' = 70"),
                           ({"bpm": float("nan")}, "'bpm'")]:
        with pytest.raises(UserError, match=words):
            settings.check_live(changes, now)
    assert now == settings.Settings()    # frozen: a change is a new value (dataclasses.replace)
    with pytest.raises(dataclasses.FrozenInstanceError):
        now.bpm = 1.0


def test_the_core_never_imports_the_commands_settings_module():
    """The Improviser and its parts take typed values: importing them loads no playbach.settings,
    not even through another module (only the take's builder, playbach/take.py, reads Settings)."""
    core = ("improviser", "sampler", "planning", "memory", "sounding", "voices", "keys", "steering",
            "live_key", "rhythm")
    code = "import sys\n" + "".join(f"import playbach.{m}\n" for m in core) + \
        "print(sorted(m for m in sys.modules if m == 'playbach.settings'))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
