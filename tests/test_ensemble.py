"""Several runs converted into one bundle (`playbach convert RUN RUN ... --out B`): one model whose
distributions are the runs' average, each run carrying its own state, played by the unchanged
device runtime."""
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_run import train_tiny

from playbach.bundle import file_sha256, load_bundle
from playbach.cli import main
from playbach.convert.build import build_bundle
from playbach.errors import UserError
from playbach.runtime import open_model

pytestmark = pytest.mark.slow

MODELS = [("step", "float32"), ("step", "int8"), ("windowed", "float32")]


def train_like_tiny_run(tiny_run: Path, out: Path, *extra: str) -> Path:
    """Another run on tiny_run's corpus and split (the same seed draws the same split)."""
    return train_tiny(tiny_run.parent / "corpus", out, *extra)


@pytest.fixture(scope="module")
def narrower_run(tiny_run, tmp_path_factory) -> Path:
    """Same inputs and split as tiny_run, another network: 24 units instead of 32."""
    return train_like_tiny_run(tiny_run, tmp_path_factory.mktemp("narrower") / "run", "--units", "24")


@pytest.fixture(scope="module")
def ensemble(tiny_run, narrower_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "bundle"
    assert main(["convert", str(tiny_run), str(narrower_run), "--out", str(out), "--openings", "2",
                 "--variants", *(f"{k}:{v}" for k, v in MODELS)]) == 0
    return out


def test_the_ensemble_follows_the_average_of_its_runs_keras_models(ensemble):
    report = json.loads((ensemble / "parity.json").read_text())
    assert report["variants"]["step_float32"]["max_abs_diff"] <= 1e-4
    assert report["variants"]["windowed_float32"]["max_abs_diff"] <= 1e-4
    assert report["variants"]["step_int8"]["pitch_top1_agreement"] >= 0.9   # a 2-epoch model: see test_convert
    assert report["edgetpu"]["unsupported"] == []


def test_bundle_json_names_every_member_and_its_state(ensemble, tiny_run, narrower_run):
    meta = json.loads((ensemble / "bundle.json").read_text())
    assert meta["model"]["members"] == 2
    assert meta["source"]["members"] == [{"run": str(r), "run_json_sha256": file_sha256(r / "run.json")}
                                         for r in (tiny_run, narrower_run)]
    step = next(m for m in meta["models"] if (m["kind"], m["variant"]) == ("step", "int8"))
    states = {r["role"]: r["shape"] for r in step["inputs"][9:]}
    assert states == {"h0": [1, 32], "c0": [1, 32], "prev_pitch": states["prev_pitch"],
                      "m1_h0": [1, 24], "m1_c0": [1, 24], "m1_prev_pitch": states["prev_pitch"]}
    assert [r["role"] for r in step["outputs"]][4:] == list(states)


def test_the_runtime_plays_the_average_of_the_runs(ensemble, tiny_bundle, narrower_run, tmp_path):
    """Event by event through the device runtime, state carried: the ensemble's distributions are
    the mean of the two runs' own bundles'."""
    narrower = build_bundle(narrower_run, tmp_path / "narrower", [("step", "float32")], openings=1)
    models = [open_model(load_bundle(b), accelerator="cpu", variant="float32") for b in (ensemble, tiny_bundle, narrower)]
    bundle = load_bundle(ensemble)
    events = bundle.codec.encode(np.concatenate(bundle.openings))[:40]
    for model in models:
        model.reset()
    for ids in events:
        both, one, other = (m.step(ids) for m in models)
        for j in range(4):
            np.testing.assert_allclose(both[j], (one[j] + other[j]) / 2, atol=1e-5)
    assert not np.allclose(one[1], other[1], atol=1e-3)   # two different models, so the mean is news


def test_runs_that_cannot_be_one_model_are_refused(tiny_run, tmp_path):
    """A run without the voice context reads other inputs: refused, naming it, nothing written."""
    other = train_like_tiny_run(tiny_run, tmp_path / "voiceless", "--units", "16", "--voices", "off")
    with pytest.raises(UserError, match=f"{other}: cannot be played with {tiny_run} as one model: its model "
                                        r"inputs \(voice context\) differ"):
        build_bundle([tiny_run, other], tmp_path / "b", [("step", "float32")])
    assert not (tmp_path / "b").exists()
