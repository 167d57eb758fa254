"""`playbach convert RUN --out BUNDLE` of a grid run (playbach/trainer/grid.py): its bundle.

The step model (one-hot inputs and the LSTM state in, logits and state out) converted with
dynamic-range weights, as the event model's step is played on the CPU; the codec the events
the player sends are written in (4 ticks per quarter: one per 16th); the first events of held-out
chorales to start from; the step's logits beside Keras's; and the played file's nats per 16th
step on the benchmark's valid and test splits, so the bundle carries the figure it plays at.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from playbach.bundle import (Benchmark, BenchmarkFigure, BundleMeta, ModelEntry, Opening, SplitRecord, file_sha256,
                             load_bundle)
from playbach.convert.tflite import convert, io_table
from playbach.errors import UserError
from playbach.evaluate_bundle import evaluate_grid
from playbach.events import Codec, notes_to_events
from playbach.files import publish
from playbach.fingerprint import CONTENT_SCHEME, content_fingerprint
from playbach.grid import (INPUTS, ORDER, REPRESENTATION, SIZES, STATE, STEPS_PER_QUARTER, VOCAB, Calibration, GridStep,
                           downbeat, open_grid, tokens_of)
from playbach.grid_improviser import MAX_NOTE
from playbach.jsb import VELOCITY, read_jsb as read_pieces_of, voice_notes
from playbach.trainer.grid import load_grid_run, read_jsb, step_model

log = logging.getLogger(__name__)
CALIBRATION_GRID = np.round(np.arange(0.6, 2.0, 0.02), 2)


def build_grid_bundle(runs: list[str | Path], out: str | Path, openings: int = 24, opening_events: int = 32) -> Path:
    """The grid runs' bundle at `out`, their models played as one (replaced only once the new one
    is complete)."""
    members = [load_grid_run(r) for r in runs]
    record = members[0][2]
    if any(m[2]["corpus_sha256"] != record["corpus_sha256"] for m in members):
        raise UserError(f"grid runs {' '.join(map(str, runs))}: trained on different corpus files")
    data = read_jsb(record["corpus"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    work.chmod(0o755)
    try:
        entries = [_convert_step(model, cfg, work / f"grid{i}_dynamic.tflite") for i, (model, cfg, _) in enumerate(members)]
        meta = BundleMeta(name=out.name, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), codec=_codec(data),
                          model={"representation": REPRESENTATION, "order": list(ORDER), "vocab": VOCAB,
                                 "members": [m[2]["config"] for m in members]},
                          models=entries, openings=_openings(data["test"], openings, opening_events),
                          source={"runs": [str(r) for r in runs], "corpus": record["corpus"],
                                  "corpus_sha256": record["corpus_sha256"]},
                          split=_split(record, members[0][1].seed))
        meta.write(work)
        calibration, fit = fit_calibration(open_grid(load_bundle(work)), data["valid"])
        meta.model["calibration"] = {**dataclasses.asdict(calibration), **fit}
        meta.write(work)
        bundle = load_bundle(work)
        meta.parity = {"probs_max_abs_diff_vs_keras": _parity([m[0] for m in members], bundle, data["test"][0])}
        meta.benchmark = _benchmark(bundle, record)
        meta.report = {"test": {"nll_per_step16": meta.benchmark.splits["test"].nll_per_step16}}
        meta.write(work)
        publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _convert_step(model, cfg, path: Path) -> ModelEntry:
    specs = {n: ((1, s), "float32") for n, s in zip(INPUTS, SIZES)}
    specs |= {n: ((1, cfg.units), "float32") for n in STATE}
    path.write_bytes(convert(step_model(model, cfg), specs, "dynamic"))
    inputs, outputs = io_table(path, list(specs), ["logits", *STATE])
    return ModelEntry(path.name, REPRESENTATION, "dynamic", file_sha256(path), path.stat().st_size, inputs, outputs)


def fit_calibration(step: GridStep, pieces: list[np.ndarray], rounds: int = 2) -> tuple[Calibration, dict]:
    """The Calibration that gives the chorales `pieces` the least NLL (teacher-forced, each from a
    zero state), found one parameter at a time over CALIBRATION_GRID; and the NLL per position
    before and after."""
    read = [step.read(rows) for rows in pieces]
    logits = np.concatenate([r[0] for r in read], axis=1)
    hold, target = np.concatenate([r[1] for r in read]), np.concatenate([r[2] for r in read])

    def nll(c: Calibration) -> float:
        return float(-np.log(c.probs(logits, hold)[np.arange(len(target)), target]).mean())

    best = Calibration()
    before = nll(best)
    for _ in range(rounds):
        for name in ("temperature", "hold_temperature"):
            best = min((dataclasses.replace(best, **{name: float(v)}) for v in CALIBRATION_GRID), key=nll)
    return best, {"fitted_on": "valid", "nll_per_position_before": before, "nll_per_position_after": nll(best)}


def _split(record: dict, seed: int) -> SplitRecord:
    """The benchmark file's own split; a grid run trains on every train chorale (none of them
    holds a held-out chorale's notes: tests/test_default_bundle.py checks by content)."""
    corpus = record["corpus"]
    if file_sha256(Path(corpus)) != record["corpus_sha256"]:
        raise UserError(f"{corpus}: not the file the run trained on (its sha256 differs from run.json's)")
    pieces = read_pieces_of(corpus)
    return SplitRecord(corpus, record["corpus_sha256"], seed, None, tuple(p.name for p in pieces["test"]),
                       tuple(p.name for p in pieces["valid"]), CONTENT_SCHEME,
                       {p.name: content_fingerprint(p.events) for p in pieces["train"]})


def _codec(data: dict) -> Codec:
    """The events a grid take is written in: a tick a 16th, notes up to MAX_NOTE, the train
    chorales' pitches and the transpositions the trainer moves them by."""
    pitches = [p for rows in data["train"] for p in rows.ravel() if p >= 0]
    return Codec(STEPS_PER_QUARTER, {"onset": list(range(MAX_NOTE + 1)), "duration": list(range(1, MAX_NOTE + 1)),
                                     "pitch": list(range(min(pitches) - 6, max(pitches) + 7)), "velocity": [VELOCITY]})


def _openings(pieces: list[np.ndarray], count: int, events: int) -> list[Opening]:
    """Held-out chorales' first events from their first full bar: a take's first row is a downbeat."""
    return [Opening(f"test/{i:03d}", notes_to_events(voice_notes(rows[downbeat(rows):].tolist()))[:events])
            for i, rows in enumerate(pieces[:count])]


def _parity(models: list, bundle, rows: np.ndarray) -> float:
    """Largest difference of the played distribution from the Keras members' (both calibrated
    alike) over one test chorale."""
    _, *features = tokens_of(rows, downbeat(rows))
    inputs = [f[None].astype(np.int32) for f in features]
    step = open_grid(bundle)
    keras_probs = step.calibration.probs(np.stack([m.predict(inputs, verbose=0)[0] for m in models]), features[1])
    played = step.calibration.probs(*step.read(rows)[:2])
    return float(np.abs(played - keras_probs).max())


def _benchmark(bundle, record: dict) -> Benchmark:
    """The played models' nats per 16th step and per note on the valid and test splits."""
    splits = {}
    for split in ("valid", "test"):
        r = evaluate_grid(bundle, record["corpus"], split)
        splits[split] = BenchmarkFigure(r["pieces"], r["steps16"], r["notes"], r["nll_per_step16"], r["nll_per_note"],
                                        r["variant"])
        log.info("%s: %.4f nats per 16th step (%s)", split, r["nll_per_step16"], r["model_file"])
    return Benchmark(record["corpus"], record["corpus_sha256"], REPRESENTATION, splits)
