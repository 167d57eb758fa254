"""How closely each converted model follows the Keras model, on the run's held-out test pieces.

Step models are played event by event through the device runtime (state carried, int8 state
requantized exactly as on the Pi) and compared with the Keras model's next-event probabilities
over the same prefix. Windowed models are compared with the Keras model on the same N-event
windows (a window cut short of the piece is a property of the windowed form, not a conversion
error). Per model: pitch top-1 agreement, mean KL(keras || tflite) per field, max |diff|.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from playbach.bundle import ModelEntry
from playbach.convert.forms import Forms
from playbach.events import FIELDS
from playbach.heads import given_pitch
from playbach.improviser import StepSource
from playbach.runtime import WindowedModel
from playbach.trainer.model import keras_inputs
from playbach.trainer.runfolder import TrainedRun
from playbach.trainer.step import build_ensemble_windowed_model

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)
FLOAT_MAX_ABS_DIFF = 1e-4
INT8_PITCH_TOP1 = 0.97
EPS = 1e-7


def compare(reference: list[np.ndarray], converted: list[np.ndarray]) -> dict:
    """Figures for aligned (n, V) probability arrays, one per field (a duration head given the
    pitch in the windowed form: (n, pitches, V), every row compared)."""
    kl = {}
    for f, p, q in zip(FIELDS, reference, converted):
        p, q = np.clip(p, EPS, 1.0), np.clip(q, EPS, 1.0)
        q = q / q.sum(axis=-1, keepdims=True)  # int8 outputs need not sum exactly to 1
        kl[f] = max(0.0, float(np.mean(np.sum(p * np.log(p / q), axis=-1))))  # no -1e-9 from rounding
    top1 = {f: float(np.mean(p.argmax(-1) == q.argmax(-1))) for f, p, q in zip(FIELDS, reference, converted)}
    return {"pitch_top1_agreement": top1["pitch"], "top1_agreement": top1,
            "mean_kl": float(np.mean(list(kl.values()))), "mean_kl_by_field": kl,
            "max_abs_diff": float(max(np.max(np.abs(p - q)) for p, q in zip(reference, converted))),
            "positions": int(len(reference[0]))}


def keras_sequence_probs(trained: keras.Model, rows: np.ndarray, next_pitch: bool = False) -> list[np.ndarray]:
    """The Keras model's next-event probabilities after each prefix of one piece: 4 arrays (n, V).
    `rows`: the piece's id rows as the model reads them (trainer/dataset.model_rows); `next_pitch`:
    the model's duration head reads the next note's pitch (the piece's, and id 0 after its end)."""
    x = keras_inputs(rows[None].astype(np.int32), following_pitches(rows)[None] if next_pitch else None)
    out = trained(x, training=False)
    return [np.asarray(out[f])[0] for f in FIELDS]


def following_pitches(ids: np.ndarray) -> np.ndarray:
    """The pitch id of the note after each row, 0 after the last: the row a duration head given
    the pitch is compared at."""
    return np.append(ids[1:, 1], 0).astype(np.int32)


def step_probs(step_model: StepSource, ids: np.ndarray) -> list[np.ndarray]:
    step_model.reset()
    rows = [given_pitch(step_model.step(event), pitch) for event, pitch in zip(ids, following_pitches(ids))]
    return [np.stack([r[j] for r in rows]) for j in range(4)]


def windows_of(pieces: dict[str, np.ndarray], window: int, count: int) -> np.ndarray:
    """Up to `count` full windows (k, N, w) of id rows, evenly spaced over the pieces."""
    chunks = [ids[s:s + window] for ids in pieces.values() for s in range(0, len(ids) - window + 1, 8)]
    if not chunks:
        return np.zeros((0, window, 4), np.int64)
    picks = np.linspace(0, len(chunks) - 1, min(count, len(chunks))).round().astype(int)
    return np.stack([chunks[i] for i in picks])


def keras_window_probs(windowed_keras: keras.Model, windows: np.ndarray) -> list[np.ndarray]:
    out = windowed_keras.predict(keras_inputs(windows.astype(np.int32)), batch_size=64, verbose=0)
    return [np.asarray(out[f]) for f in FIELDS]


def windowed_probs(windowed_model: WindowedModel, windows: np.ndarray) -> list[np.ndarray]:
    rows = [windowed_model.predict_window(w) for w in windows]
    return [np.stack([r[j] for r in rows]) for j in range(4)]


def concat(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.concatenate([p[j] for p in parts]) for j in range(4)]


def summary(variants: dict[str, dict]) -> dict:
    """parity.json's verdicts: floats within 1e-4 of Keras, int8 pitch top-1 >= 0.97."""
    checks = {}
    for name, figures in variants.items():
        if "error" in figures:
            checks[name] = "not built: " + figures["error"]
        elif name.endswith("int8"):
            ok = figures["pitch_top1_agreement"] >= INT8_PITCH_TOP1
            checks[name] = f"pitch top-1 {figures['pitch_top1_agreement']:.4f} {'>=' if ok else '<'} {INT8_PITCH_TOP1}"
        elif name.endswith("float32"):
            ok = figures["max_abs_diff"] <= FLOAT_MAX_ABS_DIFF
            checks[name] = f"max |diff| {figures['max_abs_diff']:.2e} {'<=' if ok else '>'} {FLOAT_MAX_ABS_DIFF}"
    return checks


def keras_reference(members: list[TrainedRun], rows: np.ndarray) -> list[np.ndarray]:
    """What the bundle's model should give on one piece: the members' Keras distributions, averaged."""
    each = [keras_sequence_probs(m.model, rows, m.config.duration_given_pitch) for m in members]
    return [np.mean([probs[j] for probs in each], axis=0) for j in range(len(FIELDS))]


def reached_diff(step_float32: StepSource, members: list[TrainedRun], test_rows: dict[str, np.ndarray]) -> float:
    """Max |step float32 - Keras| when float32 is not itself a requested variant."""
    return max(compare(keras_reference(members, rows), step_probs(step_float32, rows[:, :len(FIELDS)]))["max_abs_diff"]
               for rows in test_rows.values())


def measure(work: Path, entries: dict[tuple[str, str], ModelEntry], forms: Forms,
            test_rows: dict[str, np.ndarray]) -> dict[str, dict]:
    """Each model against Keras (the members' average) on the test rows; step models are fed the
    four token ids only and compute any voice context themselves, as on the Pi."""
    figures, cfg = {}, forms.source.config
    step_reference = [keras_reference(forms.members, rows) for rows in test_rows.values()]
    windows = windows_of(test_rows, cfg.window, count=128)
    window_reference = None
    for (kind, variant), entry in entries.items():
        model = forms.open(work, entry)
        if kind == "step":
            got = [step_probs(model, rows[:, :len(FIELDS)]) for rows in test_rows.values()]
            result = compare(concat(step_reference), concat(got))
        elif len(windows):
            if window_reference is None:
                batched = build_ensemble_windowed_model(forms.configs, [m.model for m in forms.members],
                                                        batch_size=None)
                window_reference = keras_window_probs(batched, windows)
            result = compare(window_reference, windowed_probs(model, windows))
        else:
            result = {"error": f"no test piece has {cfg.window} events"}
        figures[f"{kind}_{variant}"] = dict(result, bytes=entry.bytes, file=entry.file)
        log.info("parity %s %s: %s", kind, variant, {k: result.get(k) for k in
                                                     ("pitch_top1_agreement", "mean_kl", "max_abs_diff")})
    return figures
