"""The device runtime (playbach.bundle + playbach.runtime) on the real tiny bundle and interpreter."""
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from playbach.harness.bench import bench_bundle, markdown_table
from playbach.convert.parity import keras_sequence_probs
from playbach.bundle import file_sha256, load_bundle
from playbach.runtime import open_cpu_interpreter, open_model
from playbach.errors import UserError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keras_reference(tiny_run):
    """(ids of the first test piece, Keras next-event probabilities after each prefix). The Keras
    model reads the voice context the trainer computed; the runtime gets the four ids only."""
    from playbach.trainer.runfolder import load_run

    run = load_run(tiny_run)
    assert run.config.voices, "the tiny run trains with today's default, the voice context"
    rows = next(iter(sorted(run.rows("test").items())))[1][:80]
    return rows[:, :4], keras_sequence_probs(run.model, rows)


def test_step_runtime_matches_keras(tiny_bundle, keras_reference):
    ids, reference = keras_reference
    model = open_model(load_bundle(tiny_bundle), "cpu", "step", "float32")
    assert model.backend.startswith("cpu (") and model.name == "step_float32.tflite"
    for _ in range(2):  # reset() really starts over
        model.reset()
        for t, event in enumerate(ids):
            probs = model.step(event)
            for field, p in enumerate(probs):
                np.testing.assert_allclose(p, reference[field][t], atol=1e-4)


def test_windowed_runtime_matches_keras_once_the_window_is_full(tiny_bundle, keras_reference):
    ids, reference = keras_reference
    bundle = load_bundle(tiny_bundle)
    model = open_model(bundle, "cpu", "windowed", "float32")
    n = bundle.meta.model["window"]
    for event in ids[:n]:
        probs = model.step(event)
    for field, p in enumerate(probs):
        np.testing.assert_allclose(p, reference[field][n - 1], atol=1e-4)


def test_int8_state_is_requantized_with_the_input_params(tiny_bundle, keras_reference):
    ids, reference = keras_reference
    model = open_model(load_bundle(tiny_bundle), "cpu", "step", "int8")
    rows_in = {r.role: r.quantization for r in model.entry.inputs}
    rows_out = {r.role: r.quantization for r in model.entry.outputs}
    agree = 0
    for t, event in enumerate(ids):
        probs = model.step(event)
        agree += int(np.argmax(probs[1]) == np.argmax(reference[1][t]))
        for role in model.state_roles:
            out_q = model.interpreter.get_tensor(model.outputs[role][0]).astype(np.float64)
            fed = model.interpreter.get_tensor(model.inputs[role][0])
            real = (out_q - rows_out[role].zero_point) * rows_out[role].scale
            expected = np.clip(np.round(real / rows_in[role].scale) + rows_in[role].zero_point, -128, 127)
            np.testing.assert_array_equal(fed, expected.astype(np.int8))
    assert all(abs(p.sum() - 1) < 0.1 for p in probs)  # dequantized probabilities
    assert agree / len(ids) >= 0.9


def test_requantization_table_maps_codes_through_real_values():
    """Output and input params that differ (as calibration can make them) map code by code."""
    from playbach.bundle import Quantization, Tensor
    from playbach.runtime import _all_codes, _code_table, _dequantize, _lookup, _quantize

    out_row = Tensor("c0", "out", (1, 1), "int8", Quantization(0.02, 3))
    in_row = Tensor("c0", "in", (1, 1), "int8", Quantization(0.05, -7))
    table = _code_table(_quantize(_dequantize(_all_codes(out_row), out_row), in_row), out_row)
    codes = np.array([[-128, -1, 0, 3, 127]], np.int8)
    real = (codes.astype(float) - 3) * 0.02
    expected = np.clip(np.round(real / 0.05) - 7, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(_lookup(codes, table), expected)


def test_auto_falls_back_to_cpu_with_one_log_line(tiny_bundle, caplog):
    """No Coral here: the Edge TPU opener is a fake that fails as a missing libedgetpu does."""
    def no_coral(path):
        raise OSError("libedgetpu.so.1: cannot open shared object file")

    caplog.set_level(logging.INFO, logger="playbach.runtime")
    model = open_model(load_bundle(tiny_bundle), "auto", "step", "int8", edgetpu_opener=no_coral)
    assert model.backend.startswith("cpu") and model.name == "step_int8.tflite"
    lines = [r.getMessage() for r in caplog.records if r.name == "playbach.runtime"]
    assert len(lines) == 1 and "Edge TPU not used" in lines[0] and "no step int8 edgetpu model" in lines[0]


def test_auto_variant_on_the_cpu_is_the_most_faithful_one():
    """The shipped bundle: dynamic agrees with Keras on more pitches than int8 (bundle.json's parity)."""
    bundle = load_bundle(Path(__file__).resolve().parent.parent / "models" / "events")
    agreement = bundle.meta.parity["pitch_top1_agreement"]
    assert agreement["step_dynamic"] > agreement["step_int8"]
    assert bundle.most_faithful_variant("step") == "dynamic"
    assert open_model(bundle, "cpu").name == "step_dynamic.tflite"
    assert open_model(bundle, "cpu", "step", "int8").name == "step_int8.tflite"


@pytest.mark.parametrize("figures, chosen", [
    ({"step_dynamic": 0.90, "step_int8": 0.99}, "int8"),      # the better figure wins, whatever the order
    ({"step_dynamic": 0.99, "step_int8": 0.90}, "dynamic"),
    ({"step_dynamic": 0.95, "step_int8": 0.95}, "dynamic"),   # a tie: bundle.json's order
    ({"step_int8": 0.5}, "int8"),                             # a missing figure counts as none
    ({}, "dynamic"),                                          # no figures at all: the order
])
def test_most_faithful_variant_reads_the_parity_figures(tmp_path, figures, chosen):
    folder = Path(shutil.copytree(Path(__file__).resolve().parent.parent / "models" / "events", tmp_path / "b"))
    meta = json.loads((folder / "bundle.json").read_text())
    meta["parity"]["pitch_top1_agreement"] = figures
    (folder / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(folder).most_faithful_variant("step") == chosen


def test_explicit_edgetpu_without_coral_is_a_user_error(bundle_copy):
    """A fake opener stands in for the delegate: no Coral is attached where tests run."""
    bundle = with_fake_edgetpu_model(bundle_copy)

    def no_coral(path):
        raise ValueError("Failed to load delegate from libedgetpu.so.1")

    with pytest.raises(UserError, match="step_int8_edgetpu.tflite: cannot open on the Edge TPU"):
        open_model(bundle, "edgetpu", edgetpu_opener=no_coral)


def test_auto_times_both_and_keeps_the_faster(bundle_copy, caplog):
    """Fake Edge TPU: the opener returns a plain CPU interpreter of the *_edgetpu file (no Coral here)."""
    bundle = with_fake_edgetpu_model(bundle_copy)
    caplog.set_level(logging.INFO, logger="playbach.runtime")
    model = open_model(bundle, "auto", edgetpu_opener=open_cpu_interpreter)
    lines = [r.getMessage() for r in caplog.records if r.name == "playbach.runtime"]
    assert len(lines) == 1 and "ms/event" in lines[0] and "edgetpu" in lines[0]
    assert model.backend in lines[0].rsplit("->", 1)[1]
    assert len(model.step(np.zeros(4, int))) == 4


def with_fake_edgetpu_model(folder):
    """Add a step int8 'edgetpu' entry (a copy of the CPU model: no compiler here) to a bundle copy."""
    meta = json.loads((folder / "bundle.json").read_text())
    entry = next(m for m in meta["models"] if (m["kind"], m["variant"]) == ("step", "int8"))
    shutil.copy(folder / entry["file"], folder / "step_int8_edgetpu.tflite")
    meta["models"].append(dict(entry, file="step_int8_edgetpu.tflite", edgetpu=True,
                               sha256=file_sha256(folder / "step_int8_edgetpu.tflite")))
    (folder / "bundle.json").write_text(json.dumps(meta))
    return load_bundle(folder)


def test_bench_times_every_model(tiny_bundle):
    result = bench_bundle(tiny_bundle, events=30)
    assert {(r["kind"], r["variant"]) for r in result["models"]} == {
        ("step", "float32"), ("step", "int8"), ("windowed", "float32")}
    assert all(0 < r["median_ms"] <= r["p99_ms"] for r in result["models"])
    assert "step_int8_vs_windowed_float32" in result["speedup"]
    assert markdown_table(result).count("\n| ") == 3  # one row per model below the header


BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = {blocked!r}
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
    sys.meta_path.insert(0, Blocker())
""")


def run_blocked(code: str, blocked: tuple) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_device_runs_without_tensorflow_keras_music21(tiny_bundle):
    result = run_blocked(f"""
        import pkgutil, importlib, numpy as np
        import playbach, playbach.device
        for info in pkgutil.iter_modules(playbach.__path__):   # the core the daemon imports
            if info.name != "__main__" and not info.ispkg:
                importlib.import_module("playbach." + info.name)
        for info in pkgutil.iter_modules(playbach.device.__path__):
            importlib.import_module("playbach.device." + info.name)
        from playbach.bundle import load_bundle
        from playbach.runtime import open_model, interpreter_name
        model = open_model(load_bundle({str(tiny_bundle)!r}), "auto")
        probs = model.step(np.zeros(4, int))
        assert len(probs) == 4 and interpreter_name() == "ai_edge_litert"
        leaked = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "music21")]
        assert not leaked, leaked
        print("ok")
    """, ("tensorflow", "keras", "music21"))
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_interpreter_falls_back_to_tf_lite_last(tiny_bundle):
    result = run_blocked(f"""
        import numpy as np
        from playbach.bundle import load_bundle
        from playbach.runtime import open_model, interpreter_name
        model = open_model(load_bundle({str(tiny_bundle)!r}), "cpu")
        model.step(np.zeros(4, int))
        print(interpreter_name(), model.backend)
    """, ("ai_edge_litert", "tflite_runtime"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0] == "tensorflow"
