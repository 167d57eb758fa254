"""The converter on a real tiny run: parity figures, bundle contents, and every bad-input path."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from playbach.cli import main
from playbach.convert.build import build_bundle, parse_variants
from playbach.convert.edgetpu import EDGETPU_OPS, op_check
from playbach.bundle import file_sha256, load_bundle
from playbach.errors import UserError

pytestmark = pytest.mark.slow


def snapshot(folder: Path) -> dict:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())}


def test_parity_meets_targets_on_tiny_model(tiny_bundle):
    report = json.loads((tiny_bundle / "parity.json").read_text())
    variants = report["variants"]
    assert report["step_vs_keras_max_abs_diff"] <= 1e-4
    assert variants["step_float32"]["max_abs_diff"] <= 1e-4
    assert variants["windowed_float32"]["max_abs_diff"] <= 1e-4
    # the 0.97 target is for a real model; this one is 2 epochs old, its pitch distributions are
    # nearly flat (top-1 accuracy ~0.1), so near-ties flip under int8 more often
    assert variants["step_int8"]["pitch_top1_agreement"] >= 0.9
    for figures in variants.values():
        assert figures["bytes"] == (tiny_bundle / figures["file"]).stat().st_size
        assert figures["mean_kl"] >= 0 and figures["positions"] > 0


def test_bundle_json_follows_the_contract(tiny_bundle, tiny_run):
    meta = json.loads((tiny_bundle / "bundle.json").read_text())
    run = json.loads((tiny_run / "run.json").read_text())
    assert meta["format"] == 2 and meta["codec"] == run["codec"] and meta["model"] == run["model"]
    assert meta["source"]["run_json_sha256"] == file_sha256(tiny_run / "run.json")
    assert {(m["kind"], m["variant"]) for m in meta["models"]} == {
        ("step", "float32"), ("step", "int8"), ("windowed", "float32")}
    step = next(m for m in meta["models"] if (m["kind"], m["variant"]) == ("step", "int8"))
    roles = [r["role"] for r in step["inputs"]]
    assert roles[:4] == ["onset", "pitch", "duration", "velocity"] and roles[9:] == ["h0", "c0", "prev_pitch"]
    assert roles[4:9] == ["slot", "voice_interval", "voice_pitch", "next_slot", "next_position"]
    assert [r["role"] for r in step["outputs"]] == ["onset", "pitch", "duration", "velocity", "h0", "c0", "prev_pitch"]
    assert all(r["dtype"] == "int8" and r["scale"] > 0 for r in step["inputs"] + step["outputs"])
    assert [r["shape"] for r in step["inputs"][:4]] == [[1, v] for v in run["model"]["vocab_sizes"]]
    assert meta["openings"] and all(len(o["events"]) <= 32 for o in meta["openings"])
    for entry in meta["models"]:
        assert file_sha256(tiny_bundle / entry["file"]) == entry["sha256"]


def test_bundle_json_carries_the_runs_split(tiny_bundle, tiny_run):
    from playbach.fingerprint import CONTENT_SCHEME, content_fingerprint

    meta = load_bundle(tiny_bundle, verify=False).meta
    with np.load(tiny_run / "events.npz") as npz:
        train = {k.partition("/")[2]: npz[k] for k in npz.files if k.startswith("train/")}
    split = meta.split
    assert split.test == ("cs1-3cou",) and len(split.valid) == 1 and split.valid[0] not in train
    assert split.seed == 0 and split.holdout == "*-3cou*" and split.fingerprint == CONTENT_SCHEME
    assert split.train_fingerprints == {name: content_fingerprint(v) for name, v in train.items()}
    assert split.corpus.endswith("corpus") and split.corpus_sha256 is None      # a folder has no sha256
    assert meta.benchmark is None and "benchmark" not in json.loads((tiny_bundle / "bundle.json").read_text())


def test_step_int8_uses_only_edge_tpu_ops(tiny_bundle):
    check = op_check(tiny_bundle / "step_int8.tflite")
    assert check["unsupported"] == [] and check["float_ops"] == {}
    assert "GATHER" not in check["ops"] and set(check["ops"]) <= EDGETPU_OPS
    report = json.loads((tiny_bundle / "parity.json").read_text())
    assert "edgetpu_compiler" in report["edgetpu"]["compiler"]


def test_windowed_op_check_lists_what_the_edge_tpu_lacks(tiny_bundle):
    check = op_check(tiny_bundle / "windowed_float32.tflite")
    assert "GATHER" in check["unsupported"] and not check["maps_fully"]


def test_sha_mismatch_is_refused_naming_the_file(bundle_copy):
    model = bundle_copy / "step_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(UserError, match="step_int8.tflite.*sha256"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "bundle.json").write_text("{not json"), "bundle.json: not readable JSON"),
    (lambda b: (b / "bundle.json").unlink(), "bundle.json: missing"),
    (lambda b: (b / "step_float32.tflite").unlink(), "step_float32.tflite: listed in bundle.json but missing"),
    (lambda b: (b / "bundle.json").write_text(json.dumps({"format": 99})), "unknown bundle format 99"),
])
def test_corrupt_bundle_is_refused(bundle_copy, damage, message):
    damage(bundle_copy)
    with pytest.raises(UserError, match=message):
        load_bundle(bundle_copy)


def test_missing_run_exits_2(tmp_path, caplog):
    assert main(["convert", str(tmp_path / "nope"), "--out", str(tmp_path / "b")]) == 2
    assert "nope: run folder not found" in caplog.text


def test_run_without_model_exits_2(tiny_run, tmp_path, caplog):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run / "model.keras").unlink()
    assert main(["convert", str(run), "--out", str(tmp_path / "b")]) == 2
    assert "model.keras: missing" in caplog.text


def test_run_with_other_vocabulary_is_refused(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    meta = json.loads((run / "run.json").read_text())
    meta["codec"]["vocab"]["pitch"].append(max(meta["codec"]["vocab"]["pitch"]) + 1)
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="run.json: model vocab_sizes .* don't match"):
        build_bundle(run, tmp_path / "b", [("step", "float32")])
    meta["model"]["vocab_sizes"][1] += 1
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="run.json: model pitch_values .* are not the codec's pitch vocabulary"):
        build_bundle(run, tmp_path / "b", [("step", "float32")])
    meta["model"]["pitch_values"] = meta["codec"]["vocab"]["pitch"]  # consistent run.json, one pitch more than the model
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="model.keras: field 'pitch' has .* tokens but the codec"):
        build_bundle(run, tmp_path / "b", [("step", "float32")])
    assert not (tmp_path / "b").exists()


def test_failed_conversion_leaves_earlier_bundle_untouched(tiny_run, bundle_copy, tmp_path):
    before = snapshot(bundle_copy)
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="model.keras: cannot load"):
        build_bundle(run, bundle_copy, [("step", "float32")])
    assert snapshot(bundle_copy) == before
    assert not [p.name for p in bundle_copy.parent.iterdir() if ".building-" in p.name]  # no temp folder left


def test_unwritable_output_exits_2(tiny_run, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["convert", str(tiny_run), "--out", str(blocker / "bundle")]) == 2
    assert "cannot write the bundle there" in caplog.text


def test_variants_option():
    assert parse_variants(["int8"]) == [("step", "int8"), ("windowed", "int8")]
    assert parse_variants(["step:float16", "step:float16"]) == [("step", "float16")]
    with pytest.raises(UserError, match="--variants 'step:int4'"):
        parse_variants(["step:int4"])


def test_windowed_int8_crash_is_recorded_not_fatal(tiny_run, tmp_path):
    """TF 2.21's int8 calibration of the windowed LSTM segfaults; the bundle is still made. Beside it
    the cheapest model (step float32): the step int8 model's own calibration is tiny_bundle's."""
    out = build_bundle(tiny_run, tmp_path / "b", [("step", "float32"), ("windowed", "int8")], openings=1)
    meta = json.loads((out / "bundle.json").read_text())
    kinds = {(m["kind"], m["variant"]) for m in meta["models"]}
    assert ("step", "float32") in kinds
    if ("windowed", "int8") not in kinds:  # crashed (as in TF 2.21): the reason is written down
        assert any("windowed int8 not built" in n for n in meta["parity"]["notes"])
        assert "error" in json.loads((out / "parity.json").read_text())["variants"]["windowed_int8"]
    else:
        assert np.isfinite(json.loads((out / "parity.json").read_text())["variants"]["windowed_int8"]["mean_kl"])
