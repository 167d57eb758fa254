"""bundle.json fuzzed (issue 22 item 1): a bundle copied from anywhere is loaded or refused with a
UserError naming bundle.json and the key (exit 2), never an OverflowError or RecursionError (exit
1, and systemd retries); a model file outside the bundle folder is refused even when its sha256
matches. The document mutated is the shipped bundle's (models/events)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from fixtures_control import json_values

from playbach.bundle import BUNDLE_JSON, load_bundle
from playbach.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = json.loads((REPO / "models" / "events" / BUNDLE_JSON).read_text())
FUZZ = settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
# where a stranger's bundle.json can put something else (a path of keys and list indexes)
PLACES = [("format",), ("codec",), ("codec", "ticks_per_quarter"), ("codec", "vocab"), ("codec", "vocab", "pitch"),
          ("codec", "vocab", "pitch", 0), ("codec", "vocab", "onset", 1), ("codec", "fields"), ("models",),
          ("models", 0), ("models", 0, "file"), ("models", 0, "bytes"), ("models", 0, "kind"), ("models", 0, "sha256"),
          ("models", 0, "cell_clip"), ("models", 0, "inputs"), ("models", 0, "inputs", 0, "shape"),
          ("models", 0, "inputs", 0, "shape", 1), ("models", 0, "inputs", 0, "scale"),
          ("models", 0, "inputs", 0, "zero_point"), ("models", 1, "outputs", 0), ("openings",), ("openings", 0),
          ("openings", 0, "events"), ("openings", 0, "events", 0), ("openings", 0, "events", 0, 1),
          ("openings", 1, "piece"), ("memory",), ("memory", "weights"), ("memory", "weights", 0, 0), ("split",),
          ("split", "seed"), ("split", "train_fingerprints"), ("benchmark",), ("benchmark", "splits"),
          ("parity",), ("parity", "pitch_top1_agreement"), ("parity", "pitch_top1_agreement", "step_int8"),
          ("model",), ("report",), ("name",)]
HUGE = 1e999   # json.loads("1e999") is inf; written back as the literal 1e999


def put(document: dict, place: tuple, value) -> dict:
    document = json.loads(json.dumps(document))   # a deep copy, faster than copy.deepcopy
    node = document
    for key in place[:-1]:
        node = node[key]
    node[place[-1]] = value
    return document


def write(folder: Path, document: dict | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = document if isinstance(document, bytes) else json.dumps(document).replace("Infinity", "1e999").encode()
    (folder / BUNDLE_JSON).write_bytes(raw)
    return folder


def load_or_refuse(folder: Path):
    """The bundle, or None after a UserError naming its bundle.json; anything else fails the test."""
    try:
        bundle = load_bundle(folder, verify=False)
        bundle.most_faithful_variant("step")   # what the player reads of it before opening a model
    except UserError as e:
        assert str(e).startswith(str(folder)), e
        return None
    ids = bundle.codec.encode(bundle.openings[0]) if bundle.openings else None
    assert bundle.codec.ticks_per_quarter >= 1
    assert all(0 <= p <= 127 for p in bundle.codec.vocab["pitch"] + bundle.codec.vocab["velocity"])
    assert ids is None or (ids >= 0).all()
    for entry in bundle.meta.models:
        assert Path(entry.file).name == entry.file   # inside the bundle folder
        assert all(math.isfinite(t.quantization.scale) for t in entry.inputs + entry.outputs)
    return bundle


@FUZZ
@given(place=st.sampled_from(PLACES), value=json_values | st.just(HUGE) | st.just(-HUGE))
@example(place=("models", 0, "bytes"), value=HUGE)
@example(place=("models", 0, "inputs", 0, "shape", 1), value=HUGE)
@example(place=("models", 0, "inputs", 0, "zero_point"), value=HUGE)
@example(place=("openings", 0, "events", 0, 1), value=1e30)
@example(place=("codec", "ticks_per_quarter"), value=0)
@example(place=("codec", "vocab", "pitch"), value=[500, -3])
@example(place=("models", 0, "file"), value="../../../../etc/hostname")
@example(place=("models", 0, "file"), value="/etc/hostname")
@example(place=("parity", "pitch_top1_agreement"), value=[1])
def test_any_bundle_json_loads_or_is_refused_naming_the_file(tmp_path, place, value):
    load_or_refuse(write(tmp_path / "b", put(SHIPPED, place, value)))


@FUZZ
@given(raw=st.binary(max_size=200) | st.integers(1, 5000).map(lambda n: b'{"format": 2, "codec": ' + b"[" * n))
@example(raw=b'{"format": 2, "models": ' + b"[" * 5000 + b"]" * 5000 + b"}")
def test_any_bytes_as_bundle_json_are_refused_naming_the_file(tmp_path, raw):
    load_or_refuse(write(tmp_path / "b", raw))


@pytest.mark.parametrize("file", ["../../../../../../../../etc/hostname", "/etc/hostname"])
def test_a_model_file_outside_the_bundle_is_refused_even_when_its_hash_matches(tmp_path, file):
    target = Path("/etc/hostname")
    data = target.read_bytes()
    entry = {**SHIPPED["models"][0], "file": file, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    folder = write(tmp_path / "b", {**SHIPPED, "models": [entry]})
    with pytest.raises(UserError, match=f"{folder / BUNDLE_JSON}: .*'file'"):
        load_bundle(folder)


@pytest.mark.parametrize("place, value, says", [
    (("models", 0, "bytes"), HUGE, "'bytes'"),
    (("codec", "ticks_per_quarter"), 0, "'ticks_per_quarter'"),
    (("openings", 0, "events", 0, 1), 1e30, "'events'"),
])
def test_the_player_exits_2_naming_the_file_and_key(tmp_path, place, value, says):
    folder = write(tmp_path / "b", put(SHIPPED, place, value))
    for entry in SHIPPED["models"]:   # the real model files, so only bundle.json is wrong
        os.symlink(REPO / "models" / "events" / entry["file"], folder / entry["file"])
    run = subprocess.run([sys.executable, "-m", "playbach.cli", "play", "--bundle", str(folder), "--config",
                          os.devnull, "--control-socket", "", "--seconds", "1", "--accelerator", "cpu"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert str(folder / BUNDLE_JSON) in run.stderr and says in run.stderr and "Traceback" not in run.stderr
