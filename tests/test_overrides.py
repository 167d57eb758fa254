"""Live changes that last (issue 23 item 2): the overrides file in the state folder, written whole
and read back checked; a damaged one is reported and played without, never a stop."""
from __future__ import annotations

import json
import logging

from hypothesis import HealthCheck, example, given, settings as hsettings
from hypothesis import strategies as st

from playbach import settings
from playbach.overrides import MAX_BYTES, KeptChanges, read_overrides, write_overrides

FUZZ = hsettings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_changes_kept_are_read_back_at_the_next_start(tmp_path):
    kept = KeptChanges(tmp_path / "overrides.json")
    kept.note({"bpm": 72.0})
    kept.note({"key": "D minor", "temperature": 0.7})
    kept.close()
    assert read_overrides(tmp_path / "overrides.json", settings.DEFAULTS) == {
        "bpm": 72.0, "key": "D minor", "temperature": 0.7}
    assert not list(tmp_path.glob(".*tmp")), "a temp file was left behind"


def test_a_turned_knob_is_written_at_most_once_a_second(tmp_path):
    path = tmp_path / "overrides.json"
    kept = KeptChanges(path)
    kept.note({"bpm": 100.0})
    kept.flush(10.0)
    kept.note({"bpm": 101.0})
    kept.flush(10.5)
    assert json.loads(path.read_text()) == {"bpm": 100.0}
    kept.flush(11.0)
    assert json.loads(path.read_text()) == {"bpm": 101.0}


def test_reset_forgets_every_change_and_removes_the_file(tmp_path):
    path = tmp_path / "overrides.json"
    kept = KeptChanges(path, {"bpm": 60.0})
    kept.note({"plan": 0})
    kept.close()
    kept.reset()
    assert not path.exists() and read_overrides(path, settings.DEFAULTS) == {}
    kept.close()
    assert not path.exists(), "reset left a change pending"


def test_a_folder_that_cannot_be_written_is_logged_once_and_the_changes_stay(tmp_path, caplog):
    kept = KeptChanges(tmp_path / "no-such-folder" / "overrides.json")
    with caplog.at_level(logging.WARNING, logger="playbach.overrides"):
        for bpm in (70.0, 80.0):
            kept.note({"bpm": bpm})
            kept.close()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "no-such-folder/overrides.json" in warnings[0]
    assert kept.values == {"bpm": 80.0}


def test_settings_not_live_or_out_of_range_are_refused_naming_the_file(tmp_path, caplog):
    path = tmp_path / "overrides.json"
    for values, named in (({"midi_api": "alsa"}, "midi_api"), ({"bpm": 9999}, "bpm"), ({"nonsense": 1}, "nonsense"),
                          ({"pitch_min": 90, "pitch_max": 40}, "pitch")):
        path.write_text(json.dumps(values))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="playbach.overrides"):
            assert read_overrides(path, settings.DEFAULTS) == {}
        message = " ".join(r.getMessage() for r in caplog.records)
        assert str(path) in message and named in message, message


def test_a_value_that_is_not_json_cannot_be_written(tmp_path):
    try:
        write_overrides(tmp_path / "o.json", {"bpm": float("nan")})
    except ValueError:
        pass
    else:
        raise AssertionError("NaN was written")
    assert not (tmp_path / "o.json").exists()


@FUZZ
@given(st.binary(max_size=300) | st.dictionaries(st.sampled_from(settings.LIVE) | st.text(max_size=6),
                                                  st.none() | st.booleans() | st.integers() | st.floats()
                                                  | st.text(max_size=12), max_size=4).map(lambda d: json.dumps(d).encode()))
@example(b"[" * 5000)
@example(b"\xff\xfe{}")
@example(b'{"bpm": NaN}')
@example(b" " * (MAX_BYTES + 1))
def test_any_file_is_read_as_checked_live_settings_or_ignored(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("o") / "overrides.json"
    path.write_bytes(data)
    values = read_overrides(path, settings.DEFAULTS)
    assert set(values) <= set(settings.LIVE)
    settings.check_live(values, settings.DEFAULTS)   # what is returned is a valid live change
