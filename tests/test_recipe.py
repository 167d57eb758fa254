"""Training recipes (issue 21 item 4): `playbach train --recipe FILE`, a TOML file of the training
config (trainer/config.py). The shipped default's recipe is recipes/default.toml and is checked
against the shipped bundle's own model; a flag given on the command line beats the recipe; a
recipe with an unknown key, a bad value or that is not TOML is exit 2 naming the file and the key,
before any corpus is read (fuzzed, bounded like tests/test_fuzz_settings.py)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from playbach.cli import main
from playbach.events import Codec
from playbach.errors import UserError
from playbach.trainer.config import CHECKS, TrainingConfig, read_recipe, resolve
from playbach.trainer.model import ModelConfig
from playbach.trainer.runfolder import model_config

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = REPO / "recipes" / "default.toml"
CELLO_RECIPE = REPO / "recipes" / "cello.toml"
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


def test_the_default_recipe_trains_the_shipped_bundles_model():
    """models/events was trained by this recipe: its model config, rebuilt from the recipe and
    the bundle's codec, is the one bundle.json records (the two runs' ensemble adds `members`)."""
    meta = json.loads((REPO / "models" / "events" / "bundle.json").read_text())
    rebuilt = resolve(DEFAULT_RECIPE, {}).model_config(Codec.from_dict(meta["codec"]))
    # a field bundle.json predates is what that run was trained with (runfolder.model_config)
    recorded = model_config({k: v for k, v in meta["model"].items() if k != "members"}).to_dict()
    assert json.loads(json.dumps(rebuilt.to_dict())) == json.loads(json.dumps(recorded))


def test_the_recipes_are_what_the_benchmark_scripts_passed_as_flags():
    """The flags bench/train_default.sh and bench/train_cello.sh gave before the recipes existed
    (and before the cell clip: the shipped model has none)."""
    default = {"transpose": 6, "augment": "random", "epochs": 80, "patience": 5, "voices": "chords",
               "dropout": 0.35, "recurrent_dropout": 0.3, "lr_decay": 0.5, "duration": "given-pitch",
               "cell_clip": 0}
    cello = {"holdout": "*-3cou*", "stride": 8, "epochs": 40, "units": [128], "dropout": 0.6,
             "recurrent_dropout": 0.25, "lr": 2e-3, "monitor": "val_pitch_loss", "patience": 4, "voices": "off"}
    assert resolve(DEFAULT_RECIPE, {}) == resolve(None, default)
    assert resolve(CELLO_RECIPE, {}) == resolve(None, cello)
    for script, recipe in (("train_default.sh", "recipes/default.toml"), ("train_cello.sh", "recipes/cello.toml")):
        assert f"--recipe {recipe}" in (REPO / "bench" / script).read_text()


def test_the_default_recipe_writes_only_what_differs_from_the_defaults():
    """As its comment says, so reading it says what the shipped model changes; ModelConfig's
    defaults are the flags' defaults (docs/trainer.md says why the shipped recipe is not the default)."""
    defaults = asdict(TrainingConfig())
    for key, value in read_recipe(DEFAULT_RECIPE).items():
        assert value != defaults[key], key
    model = ModelConfig(vocab_sizes=(1, 1, 1, 1))
    d = TrainingConfig()
    assert (d.units, d.embed, d.window, d.lr, d.dropout, d.recurrent_dropout, d.interval_dims) == (
        model.units, model.embed_dims, model.window, model.learning_rate, model.dropout, model.recurrent_dropout,
        model.interval_dims)


def test_a_flag_given_beats_the_recipe(tmp_path):
    config = resolve(DEFAULT_RECIPE, {"epochs": 3, "seed": 1, "voices": None})
    assert (config.epochs, config.seed, config.voices, config.patience) == (3, 1, "chords", 5)


@pytest.mark.parametrize("text, key, said", [
    ("epoch = 3\n", "epoch", "unknown key 'epoch'"),
    ("corpus = 'x'\n", "corpus", "unknown key 'corpus'"),
    ("epochs = 0\n", "epochs", "is not an integer in [1,"),
    ("epochs = 2.5\n", "epochs", "is not an integer"),
    ("epochs = true\n", "epochs", "is not an integer"),
    ("dropout = 1.0\n", "dropout", "is not a number in [0.0, 1.0)"),
    ("lr = nan\n", "lr", "is not a number in (0.0"),
    ("lr = inf\n", "lr", "is not a number in (0.0"),
    ("voices = 'many'\n", "voices", "is not one of 'off', 'on', 'chords'"),
    ("units = []\n", "units", "is not a list of 1 to 8 integers"),
    ("units = [64, 0]\n", "units", "is not a list of integers in [1,"),
    ("embed = [4, 8, 4]\n", "embed", "is not a list of 4 integers"),
    ("holdout = 3\n", "holdout", "is not a non-empty string"),
    ("[model]\nunits = [64]\n", "model", "unknown key 'model'"),
])
def test_a_bad_recipe_is_exit_2_naming_the_file_and_the_key(tmp_path, caplog, text, key, said):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--recipe", str(path), "--out", str(out)]) == 2
    assert f"{path}: " in caplog.text and repr(key) in caplog.text and said in caplog.text, caplog.text
    assert not out.exists() and not (tmp_path / ".run.tmp").exists()


@pytest.mark.parametrize("data, said", [
    (b"epochs = \n", "not a TOML recipe"),
    (b"epochs = 3\n# caf\xe9\n", "not a TOML recipe"),
    (b"voices = 'on'\npitch = 'absolute'\n", "--voices on needs --pitch relative"),
])
def test_a_recipe_that_cannot_be_read_is_exit_2_naming_it(tmp_path, caplog, data, said):
    path = tmp_path / "recipe.toml"
    path.write_bytes(data)
    assert main(["train", "--recipe", str(path), "--out", str(tmp_path / "run")]) == 2
    assert f"{path}: " in caplog.text and said in caplog.text
    assert main(["train", "--recipe", str(tmp_path / "none.toml"), "--out", str(tmp_path / "run")]) == 2
    assert f"{tmp_path / 'none.toml'}: cannot read the recipe" in caplog.text


def test_a_bad_flag_value_is_exit_2_naming_the_flag(tmp_path, caplog):
    assert main(["train", "--epochs", "0", "--out", str(tmp_path / "run")]) == 2
    assert "--epochs = 0 is not an integer in [1," in caplog.text


def toml_text(value) -> str:
    """A value as TOML: JSON's spelling for strings, numbers, booleans and arrays (TOML reads
    those the same), TOML's own for non-finite floats and tables."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_text(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


KEYS = sorted(CHECKS)
values = st.recursive(
    st.booleans() | st.integers(-2**65, 2**65) | st.floats() | st.text(max_size=10)
    | st.sampled_from(["on", "off", "chords", "random", "copies", "relative", "absolute", "given-pitch", "alone",
                       "val_loss", "val_pitch_loss", "*-3cou*"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=2),
    max_leaves=8)
documents = (st.binary(max_size=200)
             | st.dictionaries(st.sampled_from(KEYS) | st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10),
                               values, max_size=5)
             .map(lambda d: "".join(f"{json.dumps(k)} = {toml_text(v)}\n" for k, v in d.items()).encode()))


@FUZZ
@given(documents)
@example(b"lr = nan\n")
@example(b"units = [" + b"[" * 3000 + b"\n")
@example(b"units = [64, 64, 64, 64, 64, 64, 64, 64, 64]\n")
@example(b"seed = 18446744073709551616\n")
@example(b"\xef\xbb\xbfepochs = 3\n")
def test_any_recipe_is_taken_whole_or_refused_naming_the_file(tmp_path, data):
    path = tmp_path / "recipe.toml"
    path.write_bytes(data)
    try:
        config = resolve(path, {})
    except UserError as e:
        assert str(e).startswith(f"{path}: "), str(e)
        return
    for f in fields(TrainingConfig):   # every value taken passes its own check again (holdout may be None)
        value = getattr(config, f.name)
        assert value is None and f.name == "holdout" or CHECKS[f.name](value) == value
    assert config.combination_error() is None


@pytest.mark.slow
def test_a_recipe_run_trains_what_it_says(tmp_path, cello_dir):
    """Through the real trainer: the recipe's keys reach run.json and report.json; the flags that
    train_tiny passes (--epochs 2, --units 32) beat the recipe's."""
    from fixtures_run import link_pieces, train_tiny

    recipe = tmp_path / "tiny.toml"
    recipe.write_text("dropout = 0.1\ninterval_dims = 8\nvoices = 'off'\nepochs = 5\nunits = [16, 16]\n")
    run = train_tiny(link_pieces(tmp_path / "corpus"), tmp_path / "run", "--recipe", str(recipe))
    model = json.loads((run / "run.json").read_text())["model"]
    report = json.loads((run / "report.json").read_text())
    assert (model["dropout"], model["interval_dims"], model["voices"], model["units"]) == (0.1, 8, 0, [32])
    assert report["training"]["max_epochs"] == 2 and report["training"]["recipe"] == str(recipe)
