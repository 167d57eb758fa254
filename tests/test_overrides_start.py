"""How the kept live changes stack at a start (playbach/overrides.at_start, build): under the
flags, over the config; one that clashes with a flag or cannot be played leaves the config."""
from __future__ import annotations

import dataclasses
import json

import pytest

from playbach import overrides, settings
from playbach.errors import UserError


def base_with(tmp_path, **values) -> settings.Settings:
    return dataclasses.replace(settings.DEFAULTS, overrides=str(tmp_path / "kept.json"), **values)


def test_kept_changes_lie_under_the_flags(tmp_path):
    (tmp_path / "kept.json").write_text(json.dumps({"bpm": 150, "key": "D minor"}))
    base = base_with(tmp_path, bpm=100.0)
    s, kept = overrides.at_start(base, {"bpm": 100.0})      # --bpm given: the flag wins
    assert (s.bpm, s.key) == (100.0, "D minor")
    assert kept.values == {"bpm": 150.0, "key": "D minor"}  # still kept for a start without the flag
    s, _ = overrides.at_start(base, {})
    assert (s.bpm, s.key) == (150.0, "D minor")


def test_no_overrides_setting_keeps_nothing():
    s, kept = overrides.at_start(settings.DEFAULTS, {})
    assert s is settings.DEFAULTS and kept is None


def test_a_kept_range_that_clashes_with_a_flag_leaves_the_config(tmp_path, caplog):
    (tmp_path / "kept.json").write_text(json.dumps({"pitch_min": 70, "pitch_max": 80}))
    base = base_with(tmp_path, pitch_max=60)
    s, kept = overrides.at_start(base, {"pitch_max": 60})
    assert s is base and kept.values == {"pitch_min": 70, "pitch_max": 80}
    assert "pitch_min" in caplog.text and "kept.json" in caplog.text


def test_kept_changes_that_cannot_be_played_fall_back_to_the_config(tmp_path, caplog):
    base = base_with(tmp_path)
    s = dataclasses.replace(base, pitch_min=0, pitch_max=1)

    def load(x: settings.Settings) -> settings.Settings:
        if x.pitch_max == 1:
            raise UserError("pitch range 0-1 is outside the bundle's pitches")
        return x

    assert overrides.build(load, s, base) is base
    assert "cannot be played" in caplog.text
    with pytest.raises(UserError):
        overrides.build(load, s, s)   # no kept changes to blame: the error stands (exit 2)
