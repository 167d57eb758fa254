"""The trainer end to end on real music: corpus reading on chorales music21 carries, split, train,
evaluate, generate on the tiny run (cello-suite movements)."""
import hashlib
import json
import logging

import mido
import numpy as np
import pytest

from fixtures_run import link_chorales
from playbach.cli import main
from playbach.events import FIELDS, Codec, Note
from playbach.midifile import read_midi, write_midi
from playbach.trainer.corpus import load_corpus
from playbach.trainer.dataset import shift_pitch
from playbach.trainer.ngram import NGram
from playbach.trainer.split import augment, split_pieces


def test_tiny_run_has_the_contracted_files(tiny_run):
    for name in ("model.keras", "checkpoint.keras", "train_state.json", "run.json", "events.npz",
                 "report.json", "curves.png", "history.json"):
        assert (tiny_run / name).is_file(), name
    meta = json.loads((tiny_run / "run.json").read_text())
    assert meta["format"] == 1 and meta["seed"] == 0
    codec = Codec.from_dict(meta["codec"])
    assert tuple(meta["model"]["vocab_sizes"]) == codec.sizes
    assert meta["model"]["recurrent_dropout"] == 0.1   # the fixture's; its bundle converts with it
    with np.load(tiny_run / "events.npz") as data:
        sides = {k.split("/", 1)[0] for k in data.files}
        assert sides == {"train", "val", "test"}
        assert data["test/cs1-3cou"].shape[1] == 4
    assert json.loads((tiny_run / "train_state.json").read_text())["epoch"] == 2


# --- corpus -----------------------------------------------------------------------------------



@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYBACH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_corpus_parses_once_then_reads_the_cache(tmp_path, cache):
    folder = link_chorales(tmp_path / "corpus", 3)
    first = load_corpus(str(folder), progress=False)
    assert [p.name for p in first.pieces] == sorted(f.stem for f in folder.iterdir())
    assert first.cached_files == 0 and len(list((cache / "notes").glob("*.json"))) == 3
    second = load_corpus(str(folder), progress=False)
    assert second.cached_files == 3
    assert all(np.array_equal(a.events, b.events) for a, b in zip(first.pieces, second.pieces))


def test_corrupt_and_empty_files_are_skipped_and_named(tmp_path, cache, caplog):
    folder = link_chorales(tmp_path / "corpus", 3)
    (folder / "garbage.mid").write_bytes(b"MThd this is not a midi file")
    (folder / "empty.mid").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(str(folder), progress=False)
    assert len(corpus.pieces) == 3
    assert sorted(corpus.skipped_files) == sorted([str(folder / "empty.mid"), str(folder / "garbage.mid")])
    assert "garbage.mid" in caplog.text and "empty.mid" in caplog.text


def train_args(corpus, out, *extra):
    return ["train", "--corpus", str(corpus), "--out", str(out), "--units", "8", "--embed", "2", "2", "2", "2",
            "--window", "16", "--epochs", "1", *extra]


def test_no_usable_music_fails_and_leaves_no_run_folder(tmp_path, cache, caplog):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("a.mid", "b.mid", "c.mid"):
        (folder / name).write_bytes(b"not midi")
    out = tmp_path / "runs" / "bad"
    assert main(train_args(folder, out)) == 2
    assert "no usable music in" in caplog.text and "0 files parsed, 3 skipped" in caplog.text
    assert not out.exists() and not (tmp_path / "runs" / ".bad.tmp").exists()


@pytest.mark.parametrize("flag", ["--dropout", "--recurrent-dropout"])
def test_a_dropout_rate_outside_0_to_1_is_refused_before_anything_runs(tmp_path, capsys, flag):
    out = tmp_path / "runs" / "bad"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(out), flag, "1.5"])
    assert exit_.value.code == 2
    assert f"argument {flag}: invalid fraction value: '1.5'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("voices", ["on", "chords"])
def test_voices_without_relative_pitch_are_refused_before_the_corpus_is_read(tmp_path, caplog, voices):
    out = tmp_path / "runs" / "abs"
    assert main(train_args(tmp_path / "no-such-corpus", out, "--pitch", "absolute", "--voices", voices)) == 2
    assert f"--voices {voices} needs --pitch relative" in caplog.text
    assert not out.exists() and not (tmp_path / "runs" / ".abs.tmp").exists()


def test_too_few_events_for_one_window_fails_cleanly(tmp_path, cache, caplog):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for k in range(3):
        write_midi([Note(4 * i, 60 + i % 5, 4, 80) for i in range(10)], folder / f"short{k}.mid", 4)
    out = tmp_path / "runs" / "short"
    assert main(train_args(folder, out)) == 2
    assert "too few events for one window" in caplog.text and "10 events < window 17" in caplog.text
    assert not out.exists() and not (tmp_path / "runs" / ".short.tmp").exists()


def test_resume_with_another_model_is_refused_and_changes_nothing(tiny_run, tmp_path, caplog):
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_run.iterdir()}
    corpus = tiny_run.parent / "corpus"
    args = ["train", "--corpus", str(corpus), "--holdout", "*-3cou*", "--out", str(tiny_run),
            "--units", "16", "--embed", "4", "8", "4", "2", "--window", "16", "--epochs", "3",
            "--resume", str(tiny_run / "checkpoint.keras")]
    assert main(args) == 2
    assert "cannot resume" in caplog.text and "model config differs" in caplog.text
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_run.iterdir()} == before


def test_resume_continues_from_the_checkpoints_epoch(tiny_run, tmp_path):
    corpus = tiny_run.parent / "corpus"
    out = tmp_path / "resumed"
    args = ["train", "--corpus", str(corpus), "--holdout", "*-3cou*", "--out", str(out),
            "--units", "32", "--embed", "4", "8", "4", "2", "--window", "16", "--epochs", "3",
            "--batch", "32", "--recurrent-dropout", "0.1", "--monitor", "val_pitch_loss", "--resume", str(tiny_run)]
    assert main(args) == 0
    assert json.loads((out / "train_state.json").read_text())["epoch"] == 3
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 3


# --- split, baseline, report --------------------------------------------------------------------

def test_train_flags_default_to_the_model_config():
    """`playbach train` with no model flags and no recipe trains ModelConfig(): one set of defaults."""
    import argparse

    from playbach.trainer import train
    from playbach.trainer.model import ModelConfig

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    c = train.Request.from_args(parser.parse_args(["--out", "x"])).config
    codec = Codec(4, {"onset": [0, 1], "pitch": [60, 62], "duration": [1, 2], "velocity": [64, 65]})
    assert c.model_config(codec) == ModelConfig(vocab_sizes=codec.sizes, pitch_values=(60, 62))


def test_split_puts_each_piece_on_one_side_only():
    names = [f"cs{s}-{m}" for s in range(1, 7) for m in ("1pre", "2all", "3cou", "4sar", "5men", "6gig")]
    for holdout in (None, "*-3cou*"):
        split = split_pieces(names, seed=1, holdout=holdout)
        sides = [set(split.train), set(split.val), set(split.test)]
        assert sum(map(len, sides)) == len(names) and set().union(*sides) == set(names)
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert split.test == [f"cs{s}-3cou" for s in range(1, 7)]
    assert split_pieces(names, seed=1) == split_pieces(names, seed=1)


def test_transposition_copies_pieces_within_midi_range():
    piece = np.array([[0, 60, 4, 64], [4, 126, 4, 64]])
    moved = augment([piece], 2)
    assert [m[1, 1] for m in moved] == [124, 125, 126, 127]  # +2 would leave 0..127


def test_random_transposition_moves_whole_windows_inside_the_vocabulary():
    rng = np.random.default_rng(0)
    windows = np.zeros((400, 9, 4), dtype=np.int32)
    windows[:, :, 1] = rng.integers(3, 8, size=(400, 9))      # pitch ids 3..7 of a 10-id vocabulary
    windows[:, :2, 1] = [3, 7]
    windows[0, :, 1] = [0, 9, 0, 9, 0, 9, 0, 9, 0]            # no room to move at all
    moved = shift_pitch(windows, rng, 3, pitch_size=10)
    shift = moved[:, :, 1] - windows[:, :, 1]
    assert (shift == shift[:, :1]).all()                     # one shift per window, every note
    assert shift[0, 0] == 0 and moved[:, :, 1].min() >= 0 and moved[:, :, 1].max() <= 9
    assert set(shift[1:, 0].tolist()) == {-3, -2, -1, 0, 1, 2}  # ids 3..7 can go down 3, up 2
    assert (moved[:, :, [0, 2, 3]] == windows[:, :, [0, 2, 3]]).all()


def test_ngram_distributions_are_real_probabilities():
    model = NGram(vocab_size=5, max_order=3).fit([np.array([0, 1, 2, 3, 1, 2, 3])])
    for p in model._chain([-1, 1, 2]):
        assert p.sum() == pytest.approx(1.0) and (p > 0).all()
    scores = model.score_orders([np.array([1, 2, 3, 1, 2])])
    assert scores[2]["top1"] == 1.0 and scores[2]["nll"] < scores[0]["nll"]


def test_report_has_every_key_as_numbers(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    for dotted in ("corpus.pieces", "corpus.events", "corpus.unique_pitch_tokens", "corpus.series_tokens",
                   "test.pitch_top1", "test.pitch_nll", "test.duration_top1", "test.onset_top1",
                   "baseline.ngram.pitch_top1", "baseline.ngram.pitch_nll", "time.parse_s", "time.train_s",
                   "time.epochs"):
        value = report
        for key in dotted.split("."):
            value = value[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), dotted
    assert report["corpus"]["skipped_files"] == []
    assert report["split"]["test_pieces"] == ["cs1-3cou"]
    assert "cs1-3cou" not in report["split"]["train_pieces"] + report["split"]["val_pieces"]
    assert report["corpus"]["pieces"] == 6 and report["time"]["epochs"] == 2


# --- evaluate, generate -------------------------------------------------------------------------

def test_evaluate_prints_model_and_baseline(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run)]) == 0
    table = capsys.readouterr().out
    assert all(f in table for f in FIELDS) and "n-gram" in table


def test_generate_writes_a_midi_file_and_a_piano_roll(tiny_run, tmp_path):
    take = tmp_path / "take.mid"
    assert main(["generate", str(tiny_run), "--out", str(take), "--events", "40", "--opening", "8",
                 "--temperature", "0.9", "--top-k", "5", "--seed", "3"]) == 0
    notes = read_midi(take)
    assert len(notes) == 48
    assert (tmp_path / "take.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    midi = mido.MidiFile(take)   # the player's defaults: no Program Change (program = -1), 90 bpm
    assert [m.program for m in midi.tracks[0] if m.type == "program_change"] == []
    assert [round(mido.tempo2bpm(m.tempo)) for m in midi.tracks[0] if m.type == "set_tempo"] == [90]
