"""`playbach train --representation grid`: a grid model (playbach/grid.py) on the JSB chorales.

The chorales' own form, read voice by voice: two LSTM layers over embeddings of the previous
token, the voice's token a step before, the voice and the 16th of the bar; a softmax over the
voice's next token. Four-bar windows (hop half a window), every training piece moved by a fresh
transposition each epoch, the best validation epoch kept and the step halved when an epoch does
not improve on it. The run folder holds `grid.weights.h5` and `run.json` (the settings, the
history, the valid and test nats per 16th step); `playbach convert` makes the bundle.
`--distribute mirrored|multi-worker` trains it through tf.distribute as the event model's trainer
does (trainer/distribute.py): --batch the global batch, every worker drawing the same windows
from the same seed and keeping its share of each batch, the chief writing the run.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from playbach.errors import UserError
from playbach.files import write_text_atomically
from playbach.grid import BAR, INPUTS, LAYERS, REPRESENTATION, SIZES, STATE, VOCAB, VOICES, downbeat, tokens_of
from playbach.jsb import looks_like_jsb, read_rows
from playbach.trainer import distribute

log = logging.getLogger(__name__)
WEIGHTS = "grid.weights.h5"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class GridConfig:
    units: int = 256
    dims: tuple[int, ...] = (64, 64, 4, 16)   # embedding of each of INPUTS
    dropout: float = 0.3
    lr: float = 0.003
    batch: int = 32
    epochs: int = 60
    window: int = 64          # 16ths a training window
    transpose: int = 6
    seed: int = 0


def config_of(args: argparse.Namespace) -> GridConfig:
    """The grid run's settings from the train flags it shares with the event model's."""
    given = {"units": args.units[0] if args.units else None, "dropout": args.dropout, "lr": args.lr,
             "batch": args.batch, "epochs": args.epochs, "transpose": args.transpose, "seed": args.seed}
    return GridConfig(**{k: v for k, v in given.items() if v is not None})


def read_jsb(path: str) -> dict[str, list[np.ndarray]]:
    """The benchmark file's splits as rows (steps, 4); a UserError naming the file otherwise."""
    if not path or not looks_like_jsb(path):
        raise UserError(f"--representation grid reads the JSB benchmark file (Jsb16thSeparated.json), not {path!r}")
    return {s: [np.asarray(rows, dtype=np.int64) for _, rows in pieces] for s, pieces in read_rows(path).items()}


def windows(pieces: list[np.ndarray], cfg: GridConfig, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Training windows (hop half a window), each piece moved by a fresh shift within the MIDI range."""
    inputs, targets = [[] for _ in INPUTS], []
    n = cfg.window * VOICES
    for rows in pieces:
        shift = int(rng.integers(-cfg.transpose, cfg.transpose + 1))
        moved = np.where(rows >= 0, np.clip(rows + shift, 0, VOCAB - 2), -1)
        target, *features = tokens_of(moved, downbeat(rows))
        for lo in range(0, len(target) - n + 1, n // 2):
            targets.append(target[lo:lo + n])
            for store, f in zip(inputs, features):
                store.append(f[lo:lo + n])
    return [np.array(s).reshape(-1, n) for s in inputs], np.array(targets).reshape(-1, n)


def build(cfg: GridConfig):
    import keras
    from keras import layers
    ins = [keras.Input((None,), dtype="int32", name=n) for n in INPUTS]
    x = layers.Concatenate()([layers.Embedding(s, d, name=f"embed_{n}")(i)
                              for i, n, s, d in zip(ins, INPUTS, SIZES, cfg.dims)])
    for k in range(LAYERS):
        x = layers.LSTM(cfg.units, return_sequences=True, dropout=cfg.dropout, name=f"lstm_{k}")(x)
    x = layers.Dropout(cfg.dropout)(x)
    model = keras.Model(ins, layers.Dense(VOCAB, name="head")(x))
    model.compile(keras.optimizers.Adam(cfg.lr, clipnorm=1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def step_model(model, cfg: GridConfig):
    """The trained model as one step: one-hot inputs and the LSTM state in, logits and state out
    (what the converter turns into the bundle's grid model)."""
    import keras
    from keras import layers
    ins = {n: keras.Input((s,), batch_size=1, name=n) for n, s in zip(INPUTS, SIZES)}
    ins |= {n: keras.Input((cfg.units,), batch_size=1, name=n) for n in STATE}
    x = layers.Concatenate()([layers.Dense(d, use_bias=False, name=f"embed_{n}")(ins[n])
                              for n, d in zip(INPUTS, cfg.dims)])
    outs = {}
    for i in range(LAYERS):
        x, (h, c) = layers.LSTMCell(cfg.units, name=f"lstm_{i}")(x, [ins[f"h{i}"], ins[f"c{i}"]])
        outs[f"h{i}"], outs[f"c{i}"] = h, c
    outs["logits"] = layers.Dense(VOCAB, name="head")(x)
    step = keras.Model(list(ins.values()), outs)
    for layer in step.layers:
        if layer.weights:
            source = model.get_layer(layer.name)
            layer.set_weights(getattr(source, "cell", source).get_weights())
    return step


def fit(model, data: dict, cfg: GridConfig, replicas: int = 0) -> list[dict]:
    """Epoch by epoch on fresh windows; the best validation epoch's weights left in `model`.
    `replicas` > 0: under a tf.distribute strategy of that many replicas."""
    rng = np.random.default_rng(cfg.seed)
    valid = feed(*windows(data["valid"], cfg, np.random.default_rng(1)), cfg, replicas, None, "validation")
    best, history, started = None, [], time.time()
    for epoch in range(cfg.epochs):
        train = feed(*windows(data["train"], cfg, rng), cfg, replicas, cfg.seed + epoch, "training")
        checked = valid["x"] if replicas else (valid["x"], valid["y"])
        out = model.fit(**train, epochs=1, verbose=0, validation_data=checked)
        history.append({k: float(v[0]) for k, v in out.history.items()})
        log.info("epoch %d: loss %.4f, val_loss %.4f (%.0f s)", epoch + 1, history[-1]["loss"],
                 history[-1]["val_loss"], time.time() - started)
        if best is None or history[-1]["val_loss"] < best[0]:
            best = (history[-1]["val_loss"], model.get_weights())
        else:   # no better than the best: halve the step
            model.optimizer.learning_rate.assign(model.optimizer.learning_rate * 0.5)
    if best:
        model.set_weights(best[1])
    return history


def feed(x: list[np.ndarray], y: np.ndarray, cfg: GridConfig, replicas: int, seed: int | None, what: str) -> dict:
    """model.fit's data: the arrays (Keras batches and shuffles them), or under a strategy a
    tf.data pipeline of global batches that every worker draws alike and shares out."""
    x = dict(zip(INPUTS, x))
    if not replicas:
        return {"x": x, "y": y, "batch_size": cfg.batch}
    return {"x": distribute.batches(x, y, cfg.batch, replicas, seed, what), "shuffle": False}


def run(args: argparse.Namespace) -> int:
    if args.resume or args.recipe:
        raise UserError("--representation grid: --resume and --recipe are the event model's; "
                        "train it with its own flags")
    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out}: already exists; give a new run folder")
    task = distribute.check_devices(args.distribute, args.cpu_devices, os.environ)
    cfg = config_of(args)
    data = read_jsb(args.corpus)
    import keras
    strategy = distribute.make_strategy(args.distribute, args.cpu_devices) if args.distribute else None
    replicas = strategy.num_replicas_in_sync if strategy else 0
    if strategy:
        log.info("global batch %d: %d windows on each of %d replicas", cfg.batch,
                 distribute.check_batch(cfg.batch, replicas), replicas)
    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build(cfg)
    history = fit(model, data, cfg, replicas)
    if task is not None and not task.chief:
        log.info("%s %d done: the chief writes %s", task.role, task.index, out)
        return 0
    write_run(out, model, cfg, args.corpus, history)
    return 0


def write_run(out: Path, model, cfg: GridConfig, corpus: str, history: list[dict]) -> None:
    """The run folder, written beside and renamed into place whole."""
    work = out.with_name(f".{out.name}.writing")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model.save_weights(str(work / WEIGHTS))
    record = {"representation": REPRESENTATION, "config": asdict(cfg), "corpus": corpus,
              "corpus_sha256": hashlib.sha256(Path(corpus).read_bytes()).hexdigest(), "history": history,
              "bar": BAR}
    write_text_atomically(work / RUN_JSON, json.dumps(record, indent=1) + "\n")
    work.rename(out)
    log.info("grid run written to %s", out)


def load_grid_run(path: str | Path):
    """(Keras model with the run's weights, GridConfig, run.json) of a grid run folder."""
    path = Path(path)
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{path / WEIGHTS}: missing (is {path} a run of `playbach train --representation grid`?)")
    try:
        record = json.loads((path / RUN_JSON).read_text())
        cfg = GridConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path / RUN_JSON}: not a grid run's record ({e})") from e
    model = build(cfg)
    model.load_weights(str(path / WEIGHTS))
    return model, cfg, record


def is_grid_run(path: str | Path) -> bool:
    try:
        return json.loads((Path(path) / RUN_JSON).read_text()).get("representation") == REPRESENTATION
    except (OSError, ValueError, AttributeError):
        return False
