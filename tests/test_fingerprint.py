"""Note-content fingerprints (playbach/fingerprint.py), the trainer leaving out a JSB train piece
that is a valid/test piece by content (trainer/corpus.py jsb_corpus), and bundle.json formats 1
and 2 (playbach/bundle.py). No TensorFlow, no shared corpus: constructed pieces only."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from playbach.bundle import Benchmark, SplitRecord, load_bundle
from playbach.errors import UserError
from playbach.events import Note, notes_to_events
from playbach.fingerprint import (CONTENT_SCHEME, content_fingerprint, melody_fingerprint, note_content, shared,
                                  top_line)
from playbach.jsb import voice_notes
from needs import EVENTS as DEFAULT, write_jsb

# a short four-voice phrase in 16ths (soprano, alto, tenor, bass), and a second harmonisation
# of the same soprano with other lower voices
PHRASE = [[72, 67, 64, 48]] * 4 + [[74, 67, 65, 50]] * 2 + [[76, 67, 64, 48]] * 2 + [[74, 65, 62, 43]] * 8
REHARMONISED = [[72, 64, 60, 45]] * 4 + [[74, 65, 62, 46]] * 2 + [[76, 67, 60, 48]] * 2 + [[74, 67, 59, 43]] * 8
OTHER = [[71, 67, 62, 55]] * 4 + [[72, 67, 64, 48]] * 12


def events(rows, shift: int = 0, velocity: int = 64, scale: int = 1) -> np.ndarray:
    notes = [Note(n.start * scale, n.pitch + shift, n.duration * scale, velocity) for n in voice_notes(rows)]
    return notes_to_events(notes)


def test_fingerprint_ignores_transposition_velocity_and_grid():
    base = content_fingerprint(events(PHRASE))
    assert content_fingerprint(events(PHRASE, shift=5)) == base
    assert content_fingerprint(events(PHRASE, shift=-12)) == base
    assert content_fingerprint(events(PHRASE, velocity=100)) == base
    assert content_fingerprint(events(PHRASE, scale=3)) == base          # the same piece on a 12-tick grid
    assert len(base) == 16 and int(base, 16) >= 0
    assert note_content(events(PHRASE)).min(axis=0)[1] == 0                 # pitches from the lowest


@pytest.mark.parametrize("change", [
    lambda e: e.__setitem__((3, 1), e[3, 1] + 1),          # one pitch a semitone up
    lambda e: e.__setitem__((3, 2), e[3, 2] + 1),          # one note longer
    lambda e: e.__setitem__((5, 0), e[5, 0] + 1),          # one onset later (and all after it)
])
def test_fingerprint_tells_one_changed_note(change):
    changed = events(PHRASE).copy()
    change(changed)
    assert content_fingerprint(changed) != content_fingerprint(events(PHRASE))
    assert content_fingerprint(events(PHRASE)[:-1]) != content_fingerprint(events(PHRASE))   # a note fewer
    assert content_fingerprint(events(OTHER)) != content_fingerprint(events(PHRASE))


def test_melody_is_the_top_line_and_survives_a_new_harmonisation():
    # lengths in units of the gcd of all times: 2 sixteenths here
    assert top_line(events(PHRASE)).tolist() == [[0, 2], [2, 1], [4, 1], [2, 4]]
    assert melody_fingerprint(events(REHARMONISED, shift=3)) == melody_fingerprint(events(PHRASE))
    assert content_fingerprint(events(REHARMONISED)) != content_fingerprint(events(PHRASE))
    assert melody_fingerprint(events(OTHER)) != melody_fingerprint(events(PHRASE))
    found = shared({"a": events(PHRASE, shift=2), "b": events(OTHER)}, {"x": events(PHRASE), "y": events(PHRASE)})
    assert found == {"a": ["x", "y"]}


def test_training_leaves_out_a_train_piece_that_is_a_held_out_one(tmp_path, caplog):
    from playbach.trainer.corpus import jsb_corpus

    transposed_test = [[p + 2 for p in row] for row in OTHER]
    path = write_jsb(tmp_path / "jsb.json", {"train": [PHRASE[:12] + OTHER, transposed_test, REHARMONISED],
                                             "valid": [PHRASE], "test": [OTHER]})
    corpus, split = jsb_corpus(str(path))
    assert corpus.dropped == {"train/001": ["test/000"]}
    assert "1 train piece(s) left out" in caplog.text and "train/001 = test/000" in caplog.text
    assert split.train == ["train/000", "train/002"] and "train/001" not in corpus.by_name()
    assert corpus.melody_shared == {"train/002": ["valid/000"]}           # another harmonisation: kept
    assert (split.val, split.test) == (["valid/000"], ["test/000"])
    assert len(corpus.sha256) == 64

    only_copies = write_jsb(tmp_path / "copies.json", {"train": [OTHER], "valid": [PHRASE], "test": [OTHER]})
    with pytest.raises(UserError, match=rf"{only_copies}: every train piece \(train/000\) is also a valid or test"):
        jsb_corpus(str(only_copies))


def bundle_with(tmp_path, **changes) -> "Path":
    folder = tmp_path / "bundle"
    shutil.copytree(DEFAULT, folder)
    document = json.loads((folder / "bundle.json").read_text())
    for key in ("split", "benchmark"):
        document.pop(key, None)
    (folder / "bundle.json").write_text(json.dumps(document | changes))
    return folder


SPLIT = {"corpus": "../shared/corpus/jsb-chorales/Jsb16thSeparated.json", "corpus_sha256": "ab" * 32,
         "seed": 0, "holdout": None, "test": ["test/000"], "valid": ["valid/000", "valid/001"],
         "fingerprint": CONTENT_SCHEME, "train_fingerprints": {"train/000": "0123456789abcdef"},
         "dropped": {}, "melody_shared": {"train/000": ["valid/001"]}}
FIGURE = {"pieces": 77, "steps16": 19536.0, "notes": 17525, "nll_per_step16": 1.5, "nll_per_note": 1.7,
          "variant": "dynamic", "memory_nll_per_step16": None}


def test_bundle_formats_1_and_2_load_and_others_are_refused(tmp_path):
    old = load_bundle(bundle_with(tmp_path, format=1), verify=False)
    assert old.meta.format == 1 and old.meta.split is None and old.meta.benchmark is None
    shutil.rmtree(tmp_path / "bundle")
    benchmark = {"corpus": SPLIT["corpus"], "corpus_sha256": "ab" * 32, "kind": "step",
                 "splits": {"valid": FIGURE | {"pieces": 76}, "test": FIGURE}}
    new = load_bundle(bundle_with(tmp_path, format=2, split=SPLIT, benchmark=benchmark), verify=False).meta
    assert isinstance(new.split, SplitRecord) and isinstance(new.benchmark, Benchmark)
    assert new.split.test == ("test/000",) and new.split.train_fingerprints == {"train/000": "0123456789abcdef"}
    assert new.benchmark.splits["test"].nll_per_step16 == 1.5 and new.benchmark.splits["valid"].pieces == 76
    assert new.to_dict()["split"] == SPLIT and new.to_dict()["benchmark"] == benchmark     # written as read
    for wrong in (3, 0, True, "2"):
        shutil.rmtree(tmp_path / "bundle")
        with pytest.raises(UserError, match=f"unknown bundle format {wrong!r} .*reads formats 1, 2"):
            load_bundle(bundle_with(tmp_path, format=wrong), verify=False)
    shutil.rmtree(tmp_path / "bundle")
    with pytest.raises(UserError, match="train_fingerprints"):
        load_bundle(bundle_with(tmp_path, format=2, split={k: v for k, v in SPLIT.items()
                                                           if k != "train_fingerprints"}), verify=False)
