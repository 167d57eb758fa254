"""The JSB Chorales benchmark (issue 11): reading Jsb16thSeparated.json for `train`, and
`playbach evaluate BUNDLE`, which scores a bundle's played model through the device runtime in a
process that cannot import TensorFlow or music21."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from needs import EVENTS as DEFAULT, REPO, jsb_file, write_jsb
from playbach.cli import BUNDLE_EVALUATE, COMMANDS, main, module_name
from playbach.errors import UserError
from playbach.events import Note
from playbach.jsb import read_jsb, steps16, voice_notes
from without_tensorflow import SITECUSTOMIZE

CHORD = [[72, 67, 64, 48]]


def test_voice_runs_become_notes_and_unisons_stay():
    rows = [[72, 67, 60, 60], [72, 67, 60, 60], [74, -1, 62, 60], [74, 69, 62, 60]]
    notes = sorted(voice_notes(rows))
    assert notes == sorted([Note(0, 72, 2, 64), Note(2, 74, 2, 64),          # soprano: a run, then a step
                            Note(0, 67, 2, 64), Note(3, 69, 1, 64),          # alto: silent at row 2
                            Note(0, 60, 2, 64), Note(2, 62, 2, 64),          # tenor
                            Note(0, 60, 4, 64)])                             # bass: a unison with the tenor, kept


def test_the_real_file_counts_what_its_readme_says():
    pieces = read_jsb(jsb_file())
    assert {s: len(p) for s, p in pieces.items()} == {"train": 229, "valid": 76, "test": 77}
    test = pieces["test"]
    assert sum(p.steps16 for p in test) == 18900 and sum(len(p.events) for p in test) == 17525
    assert all(steps16(p.events, 4) == p.steps16 for p in test)
    assert test[7].name == "test/007"


@pytest.mark.parametrize("document, says", [
    ("not json at all", "not a JSB chorales JSON file"),
    ([[[60, 60, 60, 60]]], "expected an object of splits"),
    ({"train": [CHORD], "test": [CHORD]}, "no split 'valid'"),
    ({"train": [CHORD], "valid": [CHORD], "test": [CHORD, [[60, 61, 62]]]}, "piece test/001, row 0"),
    ({"train": [CHORD], "valid": [[[-1] * 4]], "test": [CHORD]}, "piece valid/000 has no notes"),
])
def test_bad_files_are_one_error_naming_file_and_piece(tmp_path, document, says):
    path = tmp_path / "bad.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(UserError, match=says) as caught:
        read_jsb(path)
    assert str(path) in str(caught.value)


def test_train_refuses_bad_benchmark_input_and_leaves_no_run(tmp_path, caplog):
    held = [[71, 67, 62, 55]]     # valid and test pieces other than the train ones (a copy would be left out)
    short = write_jsb(tmp_path / "short.json", {"train": [CHORD * 200, CHORD * 8], "valid": [held * 200, held * 8],
                                                "test": [held * 200, held * 8]})
    lacking = write_jsb(tmp_path / "lacking.json", {"train": [CHORD * 200], "test": [CHORD * 200]})
    cases = [(short, [], "piece train/000 has 4 events, fewer than one window"),
             (lacking, [], "no split 'valid'"),
             (short, ["--holdout", "test/*"], "its own train / valid / test split")]
    for path, extra, says in cases:
        caplog.clear()
        assert main(["train", "--corpus", str(path), "--out", str(tmp_path / "run"), *extra]) == 2
        assert says in caplog.text and str(path) in caplog.text, caplog.text
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lacking.json", "short.json"]


def test_evaluate_routes_bundles_to_the_core_and_runs_to_the_trainer(tmp_path):
    assert module_name("evaluate", [str(DEFAULT), "--corpus", "x.json"]) == BUNDLE_EVALUATE
    assert module_name("evaluate", ["--json", "o.json", str(DEFAULT)]) == BUNDLE_EVALUATE
    (tmp_path / "run.json").write_text("{}")
    assert module_name("evaluate", [str(tmp_path)]) == COMMANDS["evaluate"][0]


def blocked_evaluate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`playbach evaluate` in a process where importing tensorflow, keras or music21 fails."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True)
    assert check.returncode != 0, "the blocker did not block"
    return subprocess.run([sys.executable, "-m", "playbach", "evaluate", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_evaluate_a_bundle_without_tensorflow(tmp_path):
    pieces = json.loads(jsb_file().read_text())["test"][:4]
    few = write_jsb(tmp_path / "few.json", {"test": pieces})
    out = tmp_path / "out" / "figures.json"
    out.parent.mkdir()
    done = blocked_evaluate(tmp_path, str(DEFAULT), "--corpus", str(few), "--split", "test", "--json", str(out))
    assert done.returncode == 0, done.stderr
    r = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["figures.json"]          # written atomically, no temp left
    notes = sum(len(voice_notes(rows)) for rows in pieces)
    assert (r["pieces"], r["steps16"], r["notes"]) == (4, sum(len(rows) for rows in pieces), notes)
    bundle = json.loads((DEFAULT / "bundle.json").read_text())
    agreement = bundle["parity"]["pitch_top1_agreement"]
    assert r["variant"] == max((e["variant"] for e in bundle["models"] if e["kind"] == "step" and not e.get("edgetpu")),
                               key=lambda v: agreement.get(f"step_{v}", 0.0))
    heads = [f"{f}_{k}" for f in ("onset", "pitch", "duration", "velocity") for k in ("nll", "top1")]
    values = [r[k] for k in ("nll_per_step16", "nll_per_note", *heads)]
    assert all(math.isfinite(v) and v >= 0 for v in values), r
    assert 0.5 < r["nll_per_step16"] < 8 and 0.5 < r["nll_per_note"] < 8, r
    assert 0.2 < r["pitch_top1"] < 1 and 0.5 < r["onset_top1"] <= 1, r
    # the definition: every head of every event, over the 16th steps
    per_event = sum(r[f"{f}_nll"] for f in ("onset", "pitch", "duration", "velocity"))
    total = per_event * r["scored_events"] + r["first_event_nll"] * r["pieces"]
    assert r["nll_per_step16"] == pytest.approx(total / r["steps16"], rel=1e-6)
    assert r["scored_events"] == notes - 4


def test_evaluate_stops_on_a_pitch_the_bundle_cannot_play_or_a_missing_split(tmp_path):
    low = CHORD * 20 + [[72, 67, 64, 20]] * 4 + CHORD * 20
    bad = write_jsb(tmp_path / "low.json", {"test": [CHORD * 40, low]})
    done = blocked_evaluate(tmp_path, str(DEFAULT), "--corpus", str(bad), "--json", str(tmp_path / "o.json"))
    assert done.returncode == 2, done.stderr
    assert "piece test/001: pitch 20 is outside the bundle's pitch vocabulary" in done.stderr
    done = blocked_evaluate(tmp_path, str(DEFAULT), "--corpus", str(bad), "--split", "valid")
    assert done.returncode == 2 and f"{bad}: no split 'valid'" in done.stderr, done.stderr
    assert not (tmp_path / "o.json").exists()


def test_run_evaluation_reports_the_benchmark_measure():
    from playbach.events import Codec
    from playbach.trainer.evaluate import per_step16

    codec = Codec(4, {"onset": [0, 1, 2], "pitch": [60, 62], "duration": [1, 2], "velocity": [64, 65]})
    pieces = [codec.encode(np.array([[0, 60, 2, 64], [2, 62, 2, 64]])),       # 4 steps, 2 notes
              codec.encode(np.array([[0, 60, 1, 64], [1, 62, 1, 64], [0, 60, 1, 64]]))]   # 2 steps, 3 notes
    scores = {f: {"nll": 0.5, "top1": 0.0} for f in ("onset", "pitch", "duration", "velocity")}
    out = per_step16(pieces, codec, {"m": scores})
    total = 2 * (math.log(3) + 3 * math.log(2)) + 3 * 4 * 0.5   # two first events uniform, three scored
    assert (out["steps16"], out["notes"]) == (6.0, 5)
    assert out["m"]["nll_per_step16"] == pytest.approx(total / 6)
    assert out["m"]["nll_per_note"] == pytest.approx(total / 5)


def test_train_uses_the_files_own_split_as_is():
    from playbach.trainer.corpus import jsb_corpus

    corpus, split = jsb_corpus(str(jsb_file()))
    assert (len(split.train), len(split.val), len(split.test)) == (229, 76, 77)
    assert split.test[0] == "test/000" and split.val[-1] == "valid/075"
    assert corpus.grid == 4 and corpus.merged == 0 and corpus.events == 49300 + 15897 + 17525


def test_evaluate_reads_the_files_folder_and_a_folder_of_midi(tmp_path):
    from playbach.bundle import load_bundle
    from playbach.evaluate_bundle import evaluate_bundle
    from playbach.midifile import write_midi

    bundle = load_bundle(DEFAULT)
    # a folder holding a JSB file is read as that file: three of the real valid chorales suffice
    document = json.loads(jsb_file().read_text())
    jsb_folder = tmp_path / "jsb"
    jsb_folder.mkdir()
    write_jsb(jsb_folder / "Jsb16thSeparated.json", {"train": [], "test": [], "valid": document["valid"][:3]})
    folder = evaluate_bundle(bundle, str(jsb_folder), "valid")
    assert folder["corpus"].endswith("Jsb16thSeparated.json:valid") and folder["pieces"] == 3
    alone = evaluate_bundle(bundle, str(jsb_folder / "Jsb16thSeparated.json"), "valid")
    assert folder["nll"] == alone["nll"] and folder["notes"] == alone["notes"] > 0
    scale = [Note(4 * i, 60 + step, 4, 64) for i, step in enumerate((0, 2, 4, 5, 7, 9, 11, 12))]
    write_midi(scale, tmp_path / "scale.mid", 4)
    midi = evaluate_bundle(bundle, str(tmp_path), None)
    assert (midi["pieces"], midi["notes"], midi["steps16"], midi["split"]) == (1, 8, 32.0, None)
    assert math.isfinite(midi["nll_per_step16"])
    with pytest.raises(UserError, match="a folder of MIDI files has no splits"):
        evaluate_bundle(bundle, str(tmp_path), "test")
