"""`playbach evaluate RUN`: per head top-1 and NLL on the run's test pieces, beside the n-gram.

The model reads each test piece from its first event, as the device plays (state carried
from the start), and predicts events 1..n-1; the n-gram baseline is scored on the same targets.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from playbach.device.events import FIELDS, Codec
from playbach.errors import UserError
from playbach.trainer import ngram

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder written by `playbach train`")


def load_split_events(run: Path) -> dict[str, dict[str, np.ndarray]]:
    """{"train": {piece: values}, "val": ..., "test": ...} from the run's events.npz."""
    path = run / "events.npz"
    if not path.exists():
        raise UserError(f"{path} is missing: not a run folder written by `playbach train`")
    sides: dict[str, dict[str, np.ndarray]] = {"train": {}, "val": {}, "test": {}}
    with np.load(path) as data:
        for key in data.files:
            side, name = key.split("/", 1)
            sides[side][name] = data[key]
    return sides


def model_scores(model, pieces: list[np.ndarray], batch_size: int = 16) -> dict:
    """Token-id pieces -> {field: {"top1", "nll"}}, each piece run whole as one sequence.

    Pieces are padded at the end to one length and run as a batch: the LSTM is causal, so
    the padding never changes a prediction that is scored."""
    pieces = [p for p in pieces if len(p) >= 2]
    if not pieces:
        return {f: {"top1": 0.0, "nll": 0.0} for f in FIELDS}
    length = max(len(p) for p in pieces) - 1
    padded = np.zeros((len(pieces), length, 4), dtype=np.int32)
    for i, p in enumerate(pieces):
        padded[i, :len(p) - 1] = p[:-1]
    out = model.predict({f: padded[:, :, j] for j, f in enumerate(FIELDS)}, batch_size=batch_size, verbose=0)
    hits, nll, n = np.zeros(4), np.zeros(4), sum(len(p) - 1 for p in pieces)
    for i, p in enumerate(pieces):
        for j, f in enumerate(FIELDS):
            probs = out[f][i, :len(p) - 1]
            target = p[1:, j]
            hits[j] += (probs.argmax(axis=1) == target).sum()
            nll[j] -= np.log(np.maximum(probs[np.arange(len(target)), target], 1e-12)).sum()
    return {f: {"top1": float(hits[j] / n), "nll": float(nll[j] / n)} for j, f in enumerate(FIELDS)}


def baseline_scores(codec: Codec, train: list[np.ndarray], val: list[np.ndarray],
                    test: list[np.ndarray]) -> dict:
    """{field: {"order", "top1", "nll", "val_nll"}}: one n-gram per field on the token ids."""
    return {f: ngram.baseline([p[:, j] for p in train], [p[:, j] for p in val], [p[:, j] for p in test],
                              codec.sizes[j])
            for j, f in enumerate(FIELDS)}


def evaluate(model, codec: Codec, sides: dict[str, dict[str, np.ndarray]]) -> dict:
    """The report's "test" and "baseline" sections for a model and the run's split (values)."""
    ids = {side: [codec.encode(v) for v in pieces.values()] for side, pieces in sides.items()}
    scores = model_scores(model, ids["test"])
    base = baseline_scores(codec, ids["train"], ids["val"], ids["test"])
    test = {}
    for f in FIELDS:
        test[f"{f}_top1"] = scores[f]["top1"]
        test[f"{f}_nll"] = scores[f]["nll"]
    test["events"] = int(sum(len(p) - 1 for p in ids["test"] if len(p) > 1))
    ngram_report = {}
    for f in FIELDS:
        ngram_report[f"{f}_top1"] = base[f]["top1"]
        ngram_report[f"{f}_nll"] = base[f]["nll"]
        ngram_report[f"{f}_order"] = base[f]["order"]
    ratio = test["pitch_top1"] / ngram_report["pitch_top1"] if ngram_report["pitch_top1"] else None
    return {"test": test, "baseline": {"ngram": ngram_report}, "pitch_top1_vs_ngram": ratio}


def format_table(result: dict) -> str:
    rows = [f"{'head':<10}{'top-1':>8}{'nll':>8}   {'n-gram top-1':>12}{'nll':>8}{'order':>6}"]
    base = result["baseline"]["ngram"]
    for f in FIELDS:
        rows.append(f"{f:<10}{result['test'][f + '_top1']:>8.3f}{result['test'][f + '_nll']:>8.3f}   "
                    f"{base[f + '_top1']:>12.3f}{base[f + '_nll']:>8.3f}{base[f + '_order']:>6}")
    return "\n".join(rows)


def run(args) -> int:
    import keras

    run_dir = Path(args.run)
    meta_path = run_dir / "run.json"
    if not meta_path.exists():
        raise UserError(f"{meta_path} is missing: not a run folder written by `playbach train`")
    codec = Codec.from_dict(json.loads(meta_path.read_text())["codec"])
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    result = evaluate(model, codec, load_split_events(run_dir))
    print(format_table(result))
    return 0
