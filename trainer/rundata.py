"""A training run's data and its report: corpus -> split -> codec -> model config -> windows
(`load_data`, the stage of `playbach train` before TensorFlow is imported), and report.json.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from playbach.events import FIELDS, Codec
from playbach.errors import UserError
from playbach.jsb import looks_like_jsb
from playbach.trainer.config import Request
from playbach.trainer.corpus import Corpus, check_windows, jsb_corpus, load_corpus, token_counts
from playbach.trainer.dataset import make_windows, model_rows
from playbach.trainer.model import ModelConfig
from playbach.trainer.split import Split, augment, split_pieces

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """What a run trains on: the corpus, its split and the pieces on each side, the codec, the
    model config, and the training and validation windows of token ids."""
    corpus: Corpus
    split: Split
    sides: dict[str, dict[str, np.ndarray]]
    codec: Codec
    model: ModelConfig
    train: np.ndarray
    val: np.ndarray


def load_data(request: Request) -> RunData:
    """Read the corpus (the JSB file with its own split, or a folder split here) and make the windows."""
    config = request.config
    benchmark = bool(request.corpus) and looks_like_jsb(request.corpus)
    if benchmark:
        corpus, split = jsb_corpus(request.corpus)
    else:
        corpus = load_corpus(request.corpus, workers=request.workers)
    log.info("corpus %s: %d pieces, %d events, grid %d (%d of %d notes rounded), %d overlaps merged, "
             "%d skipped", corpus.source, len(corpus.pieces), corpus.events, corpus.grid, corpus.rounded,
             corpus.notes, corpus.merged, len(corpus.skipped_files))
    if not benchmark:
        split = split_pieces([p.name for p in corpus.pieces], config.seed, config.holdout)
    sides = split_events(corpus, split)
    codec = fit_codec(corpus, config.transpose)
    model = config.model_config(codec)
    if benchmark:
        check_windows(corpus, model.window)
    train, val = prepare_windows(sides, codec, model, config.window_stride, config.transpose, corpus.source,
                                 config.augment)
    return RunData(corpus, split, sides, codec, model, train, val)


def split_events(corpus: Corpus, split: Split) -> dict[str, dict[str, np.ndarray]]:
    pieces = corpus.by_name()
    return {side: {n: pieces[n] for n in getattr(split, side)} for side in ("train", "val", "test")}


def fit_codec(corpus: Corpus, pitch_margin: int) -> Codec:
    """The corpus's vocabularies; a field with one value (the chorales' velocity 64) gets a
    neighbour, because a one-class softmax head breaks Keras's sparse cross-entropy."""
    codec = Codec.fit([p.events for p in corpus.pieces], corpus.grid, pitch_margin=pitch_margin)
    if min(codec.sizes) > 1:
        return codec
    vocab = {f: v if len(v) > 1 else [v[0], v[0] + 1] for f, v in codec.vocab.items()}
    return Codec(corpus.grid, vocab)


def prepare_windows(sides, codec: Codec, cfg: ModelConfig, stride: int, transpose: int, source: str,
                    augment_mode: str = "copies") -> tuple[np.ndarray, np.ndarray]:
    """(train windows, val windows) of token ids; UserError if there is not one of each."""
    train_values = list(sides["train"].values())
    if transpose and augment_mode == "copies":
        train_values = augment(train_values, transpose)
    train = make_windows([model_rows(codec, v, cfg.voices) for v in train_values], cfg.window, stride)
    val = make_windows([model_rows(codec, v, cfg.voices) for v in sides["val"].values()], cfg.window, cfg.window)
    for side, windows in (("train", train), ("validation", val)):
        if len(windows) == 0:
            longest = max(len(v) for v in sides["train" if side == "train" else "val"].values())
            raise UserError(f"too few events for one window in {source}: the longest {side} piece has "
                            f"{longest} events < window {cfg.window + 1}")
    return train, val


def best_epoch(history: dict, monitor: str) -> int:
    values = history.get(monitor) or [0.0]
    return int(np.argmin(values)) + 1


def write_report(work: Path, data: RunData, result: dict, times: dict, request: Request, history: dict,
                 replicas: int = 1) -> dict:
    corpus, split, c = data.corpus, data.split, request.config
    counts = token_counts(corpus)
    report = {
        "corpus": {"source": corpus.source, "pieces": len(corpus.pieces), "events": corpus.events,
                   "notes_read": corpus.notes, "grid": corpus.grid, "rounded_notes": corpus.rounded,
                   "rounded_share": corpus.rounded / max(corpus.notes, 1), "merged_notes": corpus.merged,
                   "unique_pitch_tokens": counts["unique_pitch_tokens"],
                   "series_tokens": counts["series_tokens"], "skipped_files": corpus.skipped_files,
                   "cached_files": corpus.cached_files},
        "split": {"train_pieces": split.train, "val_pieces": split.val, "test_pieces": split.test,
                  "holdout": c.holdout, "transpose": c.transpose, "augment": c.augment,
                  "train_windows": len(data.train), "seed": c.seed, "corpus": corpus.source,
                  "corpus_sha256": corpus.sha256,
                  # train pieces left out because a valid/test piece has their notes (JSB only)
                  "dropped_train_pieces": corpus.dropped, "melody_shared": corpus.melody_shared},
        "training": {"monitor": c.monitor, "patience": c.patience, "batch": c.batch,
                     "stride": c.window_stride, "max_epochs": c.epochs,
                     "lr_decay": c.lr_decay, "best_epoch": best_epoch(history, c.monitor),
                     "distribute": request.distribute, "replicas": replicas, "recipe": request.recipe},
        "vocab_sizes": dict(zip(FIELDS, data.codec.sizes)),
        "model": data.model.to_dict(),
        **result,
        "time": times,
    }
    (work / "report.json").write_text(json.dumps(report, indent=2))
    return report
