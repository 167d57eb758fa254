"""bench/jsb_default.sh with another configuration (issue 11 item 4): the arguments after the run
folder reach `playbach train`, RESULT / RESULTS name the JSON, and the JSON carries the appliance
figures (time per event, parity, Edge TPU op check) beside the benchmark's. A tiny model on a few
real chorales, so it checks the plumbing, not the figures."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from playbach.bundle import load_bundle
from benchmark_checks import assert_measured_on_unseen_pieces
from needs import REPO, jsb_file, write_jsb


def test_bench_script_passes_train_arguments_and_writes_the_named_result(tmp_path):
    document = json.loads(jsb_file().read_text())
    pieces = {s: document[s][:n] for s, n in (("train", 6), ("valid", 2), ("test", 2))}
    # a test chorale a tone up among the train pieces: the trainer must leave it out (issue 11 item 7)
    pieces["train"].insert(3, [[p + 2 if p >= 0 else p for p in row] for row in pieces["test"][1]])
    small = write_jsb(tmp_path / "jsb.json", pieces)
    run = tmp_path / "run"
    env = {**os.environ, "JSB": str(small), "RESULT": "tiny", "RESULTS": str(tmp_path / "results"),
           "BENCH_EVENTS": "200"}
    done = subprocess.run(["bash", str(REPO / "bench" / "jsb_default.sh"), str(run), "--epochs", "1", "--units", "16",
                           "--window", "16", "--transpose", "2", "--augment", "random"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert result["benchmark"] == "tiny" and "--transpose 2" in result["train_args"]
    assert json.loads((run / "run.json").read_text())["model"]["units"] == [16]   # the arguments were used
    assert not (REPO / "bench" / "results" / "tiny.json").exists()
    assert {"step_dynamic.tflite", "step_int8.tflite"} <= set(result["ms_per_event"])
    assert all(v["median"] > 0 for v in result["ms_per_event"].values())
    assert set(result["parity_pitch_top1"]) == {"step_dynamic", "step_int8", "windowed_dynamic"}
    assert result["edgetpu_op_check"]["unsupported"] == []
    assert result["bundle"]["valid"]["pieces"] == 2 and result["bundle"]["test"]["pieces"] == 2
    # the bundle records its split and its benchmark figure, and passes the shipped default's checks
    split = assert_measured_on_unseen_pieces(run / "bundle", small)
    assert split.dropped == {"train/003": ["test/001"]} and len(split.train_fingerprints) == 6
    assert json.loads((run / "report.json").read_text())["split"]["dropped_train_pieces"] == split.dropped
    recorded = load_bundle(run / "bundle", verify=False).meta.benchmark.splits
    for side in ("valid", "test"):
        assert recorded[side].nll_per_step16 == pytest.approx(result["bundle"][side]["nll_per_step16"], rel=1e-6)
