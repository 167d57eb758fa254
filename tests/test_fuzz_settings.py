"""The settings a file or a command line gives, fuzzed (issue 22 item 1): any config.toml and any
flag value is taken or refused with a UserError naming the file (or flag) -- exit 2 -- never a
traceback; NaN and infinities are refused by every float setting (`bpm = nan` played nothing,
forever, with the watchdog still fed)."""
from __future__ import annotations

import argparse
import math
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from playbach import settings as pb_settings
from playbach.device import config
from playbach.errors import UserError

FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
FLOATS = [k.name for k in pb_settings.KEYS if k.type is float]
NAMES = [k.name for k in pb_settings.KEYS]


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_no_float_setting_takes_nan_or_infinity(tmp_path, name, value):
    path = tmp_path / "config.toml"
    path.write_text(f"{name} = {value}\n")
    with pytest.raises(UserError, match=f"{path}: key '{name}'"):
        pb_settings.read_file(path)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    flag = "--" + name.replace("_", "-")
    with pytest.raises(UserError, match=flag):
        config.load(parser.parse_args(["--config", str(empty), f"{flag}={value}"]))


def test_a_config_file_that_is_not_utf8_is_exit_2_naming_it(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"bpm = 90\n# caf\xe9\n")
    run = subprocess.run([sys.executable, "-m", "playbach.cli", "play", "--config", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert str(path) in run.stderr and "Traceback" not in run.stderr


toml_values = st.recursive(
    st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=3),
    max_leaves=8)


def toml_literal(value) -> str:
    """A Python value as TOML (floats as TOML writes nan and inf)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("-" if math.copysign(1, value) < 0 else "") + "nan" if math.isnan(value) else \
            ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_literal, value)) + "]"
    return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"


files = (st.binary(max_size=300)
         | st.dictionaries(st.sampled_from(NAMES) | st.text("abcdefgh_", min_size=1, max_size=8), toml_values,
                           max_size=4).map(lambda d: "".join(f"{k} = {toml_literal(v)}\n" for k, v in d.items())
                                           .encode()))


@FUZZ
@given(files)
@example(b"bpm = nan\n")
@example(b"live_gap = inf\n")
@example(b"\xff\xfe bpm = 90\n")
@example(b"x = " + b"[" * 5000 + b"\n")
@example(b"[play]\nseconds = -inf\n")
def test_any_config_file_is_read_or_refused_naming_the_file(tmp_path, data):
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    try:
        values = pb_settings.read_file(path)
    except UserError as e:
        assert str(e).startswith(str(path))
        return
    for name, value in values.items():
        assert not isinstance(value, float) or math.isfinite(value), (name, value)


@FUZZ
@given(st.sampled_from(pb_settings.KEYS), st.text(max_size=20))
@example(pb_settings.BY_NAME["bpm"], "nan")
@example(pb_settings.BY_NAME["velocity_scale"], "NaN")
@example(pb_settings.BY_NAME["retry_seconds"], "1e999")
def test_any_flag_value_is_taken_or_refused_naming_the_flag(key, text):
    parser = argparse.ArgumentParser(exit_on_error=False)
    pb_settings.add_arguments(parser, [key.name], keep_unset=True)
    try:
        args = parser.parse_args([f"{key.flag}={text}"])
    except (argparse.ArgumentError, SystemExit):
        return   # argparse's own refusal: exit 2 with a usage line
    try:
        values = pb_settings.check_arguments(args, [key.name])
    except UserError as e:
        assert key.flag in str(e)
        return
    value = values[key.name]
    assert not isinstance(value, float) or math.isfinite(value)
