"""`playbach evaluate RUN`: per head top-1 and NLL on the run's test pieces, beside the n-gram.

The model reads each test piece from its first event, as the device plays (state carried
from the start), and predicts events 1..n-1; the n-gram baseline is scored on the same targets.
Both are scored alone and with the repeat memory (playbach/memory.py, trainer/repeats.py), whose
weights are fitted on the validation pieces for each of them.
"""
from __future__ import annotations

import json
import logging

import numpy as np

from playbach.events import FIELDS, Codec
from playbach.files import write_text_atomically
from playbach.jsb import steps16
from playbach.memory import weights_to_dict
from playbach.trainer import ngram, repeats
from playbach.trainer.dataset import rows_of_ids, to_inputs_targets
from playbach.trainer.runfolder import load_run

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder written by `playbach train`")
    parser.add_argument("--write", action="store_true",
                        help="store this evaluation in the run's report.json and its repeat-memory "
                             "weights in run.json (for runs trained before the memory existed)")


def model_probs(model, pieces: list[np.ndarray], batch_size: int = 16,
                next_pitch: bool = False) -> list[list[np.ndarray]]:
    """Per piece, per field: (n-1, vocab), row t the distribution of event t+1 (with `next_pitch`
    the duration given event t+1's pitch); each piece is run whole as one sequence. Pieces are
    padded at the end to one length and run as a batch: the LSTM is causal, so the padding never
    changes a row that is kept."""
    if not pieces:
        return []
    length, width = max(len(p) for p in pieces) - 1, pieces[0].shape[1]
    padded = np.zeros((len(pieces), length + 1, width), dtype=np.int32)
    for i, p in enumerate(pieces):
        padded[i, :len(p)] = p
    x, _ = to_inputs_targets(padded, next_pitch)
    out = model.predict(x, batch_size=batch_size, verbose=0)
    return [[out[f][i, :len(p) - 1] for f in FIELDS] for i, p in enumerate(pieces)]


def ngram_probs(sides: dict[str, list[np.ndarray]], sizes) -> tuple[list, list, list[int]]:
    """The baseline's distributions on val and test (same layout as model_probs) and its order
    per field: one n-gram per field on the token ids, order chosen on validation NLL."""
    val, test, orders = [[] for _ in sides["val"]], [[] for _ in sides["test"]], []
    for j, size in enumerate(sizes):
        model, order, _ = ngram.choose_order([p[:, j] for p in sides["train"]], [p[:, j] for p in sides["val"]], size)
        orders.append(order)
        for out, pieces in ((val, sides["val"]), (test, sides["test"])):
            for rows, p in zip(out, pieces):
                rows.append(model.probs(p[:, j], order))
    return val, test, orders


def _section(scores: dict, extra: dict | None = None) -> dict:
    flat = {f"{f}_{k}": scores[f][k] for f in FIELDS for k in ("top1", "nll")}
    return {**flat, **(extra or {})}


def evaluate(model, codec: Codec, sides: dict[str, dict[str, np.ndarray]], voices: int = 0,
             next_pitch: bool = False) -> dict:
    """The report's "test", "test_memory", "baseline", "memory" and "memory_ngram" sections for a
    model and the run's split (values). "test" is the LSTM alone; "*_memory" adds the repeat
    memory, whose weights are fitted on validation separately for the LSTM and for the n-gram.
    `voices`: the model reads the voice context (ModelConfig.voices); `next_pitch`: its duration
    head reads the note's pitch (ModelConfig.duration_given_pitch)."""
    ids = {side: [codec.encode(v) for v in pieces.values() if len(v) >= 2] for side, pieces in sides.items()}
    lstm = {side: model_probs(model, [rows_of_ids(codec, i, voices) for i in ids[side]], next_pitch=next_pitch)
            for side in ("val", "test")}
    ngram_val, ngram_test, orders = ngram_probs(ids, codec.sizes)
    replays = {side: repeats.replay(ids[side]) for side in ("val", "test")}
    lstm_weights = repeats.fit(lstm["val"], ids["val"], replays["val"])
    ngram_weights = repeats.fit(ngram_val, ids["val"], replays["val"])

    def score(probs, weights):
        return repeats.mixed_scores(probs, ids["test"], replays["test"], weights)

    events = int(sum(len(p) - 1 for p in ids["test"]))
    order = {f"{f}_order": o for f, o in zip(FIELDS, orders)}
    result = {
        "test": _section(score(lstm["test"], None), {"events": events}),
        "test_memory": _section(score(lstm["test"], lstm_weights)),
        "baseline": {"ngram": _section(score(ngram_test, None), order),
                     "ngram_memory": _section(score(ngram_test, ngram_weights), order)},
        "memory": weights_to_dict(lstm_weights),          # what run.json and the bundle carry
        "memory_ngram": weights_to_dict(ngram_weights),
    }
    result["per_step16"] = {
        "test": per_step16(ids["test"], codec, {"lstm": score(lstm["test"], None), "ngram": score(ngram_test, None),
                                                "lstm_memory": score(lstm["test"], lstm_weights),
                                                "ngram_memory": score(ngram_test, ngram_weights)}),
        "val": per_step16(ids["val"], codec, {  # the n-gram's order was chosen on these pieces
            "lstm": repeats.mixed_scores(lstm["val"], ids["val"], replays["val"], None),
            "ngram": repeats.mixed_scores(ngram_val, ids["val"], replays["val"], None)})}
    result["pitch_top1_vs_ngram"] = _ratio(result["test"], result["baseline"]["ngram"])
    result["memory_pitch_top1_vs_ngram_memory"] = _ratio(result["test_memory"], result["baseline"]["ngram_memory"])
    return result


def per_step16(pieces: list[np.ndarray], codec: Codec, scored: dict[str, dict]) -> dict:
    """Each model's NLL in the JSB benchmark's measure, as `playbach evaluate BUNDLE` reports it: a
    piece's NLL summed over its events and heads, the first event (which nothing predicts here)
    as uniform over each head's vocabulary, over the pieces' 16th steps (and over their notes)."""
    steps = float(sum(steps16(codec.decode(p), codec.ticks_per_quarter) for p in pieces))
    notes = int(sum(len(p) for p in pieces))
    first = float(sum(np.log(codec.sizes))) * len(pieces)
    out: dict = {"pieces": len(pieces), "steps16": steps, "notes": notes}
    for name, scores in scored.items():
        total = first + sum(scores[f]["nll"] for f in FIELDS) * (notes - len(pieces))
        out[name] = {"nll_per_step16": total / max(steps, 1e-9), "nll_per_note": total / max(notes, 1)}
    return out


def _ratio(a: dict, b: dict) -> float | None:
    return a["pitch_top1"] / b["pitch_top1"] if b["pitch_top1"] else None


def format_table(result: dict) -> str:
    """One row per head: LSTM, LSTM + memory, n-gram (and its order), n-gram + memory."""
    columns = [("LSTM", result["test"]), ("+memory", result["test_memory"]),
               ("n-gram", result["baseline"]["ngram"]), ("+memory", result["baseline"]["ngram_memory"])]
    rows = [f"{'':<10}" + "".join(f"{name:>16}" for name, _ in columns) + f"{'n-gram order':>14}",
            f"{'head':<10}" + f"{'top-1':>8}{'nll':>8}" * len(columns)]
    for f in FIELDS:
        cells = "".join(f"{c[f + '_top1']:>8.3f}{c[f + '_nll']:>8.3f}" for _, c in columns)
        rows.append(f"{f:<10}{cells}{result['baseline']['ngram'][f + '_order']:>14}")
    bench = result["per_step16"]["test"]
    rows.append(f"nats per 16th step, every head (the JSB benchmark's measure): LSTM "
                f"{bench['lstm']['nll_per_step16']:.3f}, n-gram {bench['ngram']['nll_per_step16']:.3f}")
    return "\n".join(rows)


def run(args) -> int:
    run = load_run(args.run)
    result = evaluate(run.model, run.codec, run.sides(), run.config.voices, run.config.duration_given_pitch)
    print(format_table(result))
    if args.write:
        # the report keeps its corpus, split and time sections; run.json gets the memory the converter ships
        report_path, meta_path = run.path / "report.json", run.path / "run.json"
        write_text_atomically(report_path, json.dumps({**run.report, **result}, indent=2))
        write_text_atomically(meta_path, json.dumps({**run.meta, "memory": result["memory"]}, indent=1))
        log.info("evaluation written to %s and %s", report_path, meta_path)
    return 0
