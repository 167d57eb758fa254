"""`playbach train`: corpus -> split -> codec -> windows -> Keras fit -> evaluation -> run folder.

The run is built in a hidden temp folder beside --out and renamed at the end, so a failure
leaves nothing behind. The run folder (the converter reads it):

    model.keras       best epoch (lowest validation loss)
    checkpoint.keras  last epoch, with train_state.json, for --resume
    run.json          {"format": 1, "model", "codec", "seed", "corpus"}
    events.npz        field values per piece: "train/<piece>", "val/<piece>", "test/<piece>"
    report.json       corpus, split, test and n-gram figures, times
    history.json, curves.png
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from playbach.events import FIELDS, Codec
from playbach.errors import UserError
from playbach.files import publish
from playbach.jsb import looks_like_jsb
from playbach.trainer.corpus import Corpus, check_windows, jsb_corpus, load_corpus, token_counts
from playbach.trainer import distribute
from playbach.trainer.dataset import make_windows, model_rows, random_transpose_batches, to_inputs_targets
from playbach.trainer.model import ModelConfig, load_keras_model
from playbach.trainer.runfolder import model_config
from playbach.trainer.split import Split, augment, split_pieces
from playbach.voices import LEVELS

log = logging.getLogger(__name__)
RUN_FORMAT = 1


def fraction(text: str) -> float:
    """argparse type of a dropout rate: a number in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(text)
    return value


def add_arguments(parser) -> None:
    d = ModelConfig(vocab_sizes=(1, 1, 1, 1))
    parser.add_argument("--corpus", help="folder of .mid/.midi/.mxl/.musicxml/.krn files, or the JSB "
                        "benchmark's Jsb16thSeparated.json (its own split) (default: music21's bundled Bach chorales)")
    parser.add_argument("--holdout", help="glob of test piece names, e.g. '*-3cou*' (default: seeded 10%%)")
    parser.add_argument("--out", required=True, help="run folder to write, e.g. runs/NAME")
    parser.add_argument("--epochs", type=int, default=30, help="most epochs (early stopping ends sooner)")
    parser.add_argument("--units", type=int, nargs="+", default=list(d.units), help="LSTM sizes")
    parser.add_argument("--embed", type=int, nargs=4, default=list(d.embed_dims),
                        metavar=("ONSET", "PITCH", "DURATION", "VELOCITY"), help="embedding sizes")
    parser.add_argument("--window", type=int, default=d.window, help="training window (events)")
    parser.add_argument("--stride", type=int, default=0, help="window step (default: window // 2)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=d.learning_rate, help="Adam learning rate")
    parser.add_argument("--dropout", type=fraction, default=d.dropout, help="dropout on each LSTM layer's output")
    parser.add_argument("--recurrent-dropout", type=fraction, default=d.recurrent_dropout,
                        help="dropout on the LSTM's state inside the recurrence (slower: no fused kernel)")
    parser.add_argument("--pitch", default="relative" if d.relative_pitch else "absolute",
                        choices=["relative", "absolute"],
                        help="relative: the model also hears the interval from the previous note and its "
                             "pitch head adds interval logits (trainer/relative.py); absolute: pitch ids only")
    parser.add_argument("--interval-dims", type=int, default=d.interval_dims, help="interval embedding size")
    parser.add_argument("--voices", default=list(LEVELS)[d.voices], choices=list(LEVELS),
                        help="on: each event also gets its voice, read from the events before it (slot, "
                             "interval within the voice, where and which voice comes next: playbach/voices.py); "
                             "chords: and the pitches sounding where the next note starts, and when the first "
                             "of them ends; needs --pitch relative")
    parser.add_argument("--duration", default="given-pitch" if d.duration_given_pitch else "alone",
                        choices=["given-pitch", "alone"],
                        help="given-pitch: the duration head also reads the pitch of the note it times (its "
                             "interval from the voice's last note: a passing tone is short); alone: from the "
                             "history only; given-pitch needs --pitch relative")
    parser.add_argument("--patience", type=int, default=3, help="epochs without a better --monitor")
    parser.add_argument("--lr-decay", type=fraction, default=0.0,
                        help="multiply the learning rate by this after 2 epochs without a better --monitor "
                             "(0: never)")
    parser.add_argument("--monitor", default="val_loss", choices=["val_loss"] + [f"val_{f}_loss" for f in FIELDS],
                        help="validation loss for early stopping and the best checkpoint (on a small "
                             "corpus onset/duration overfit while pitch still learns: val_pitch_loss)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transpose", type=int, default=0,
                        help="augment training pieces by -N..+N semitones")
    parser.add_argument("--augment", default="copies", choices=["copies", "random"],
                        help="with --transpose: every training piece copied at each shift (copies), or "
                             "each window moved by a fresh random shift every epoch (random)")
    parser.add_argument("--workers", type=int, default=2, help="parsing processes")
    parser.add_argument("--resume", help="checkpoint.keras (or its run folder) to continue from")
    parser.add_argument("--distribute", choices=distribute.MODES,
                        help="train on several devices through tf.distribute (--batch stays the global "
                             "batch): mirrored, every GPU of this machine; multi-worker, one process per "
                             "machine as TF_CONFIG says, the chief writes the run (docs/trainer.md)")
    parser.add_argument("--cpu-devices", type=int, default=1,
                        help="with --distribute mirrored: split the CPU into N logical devices, one "
                             "replica each (the distributed path on a machine without a GPU)")


# --- the run's data ----------------------------------------------------------------------------

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
                    augment_mode: str = "copies"):
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


def resume_state(checkpoint: str, cfg: ModelConfig, codec: Codec):
    """(model, train_state, old history, old run folder) from a checkpoint that must match."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoint.keras"
    run_dir = path.parent
    for needed in (path, run_dir / "run.json", run_dir / "train_state.json"):
        if not needed.exists():
            raise UserError(f"cannot resume: {needed} is missing")
    meta = json.loads((run_dir / "run.json").read_text())
    old_codec = Codec.from_dict(meta["codec"])
    if old_codec != codec:
        raise UserError(f"cannot resume from {path}: its vocabulary ({run_dir / 'run.json'}) does not match "
                        f"this corpus (vocab sizes {old_codec.sizes} vs {codec.sizes}, grid "
                        f"{old_codec.ticks_per_quarter} vs {codec.ticks_per_quarter})")
    old = model_config(meta["model"])
    if old != cfg:
        diff = {k: (v, getattr(cfg, k)) for k, v in old.to_dict().items() if v != getattr(cfg, k)}
        raise UserError(f"cannot resume from {path}: its model config differs (checkpoint vs now: {diff})")
    model = load_keras_model(path, compile=True)
    state = json.loads((run_dir / "train_state.json").read_text())
    history_path = run_dir / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else {}
    return model, state, history, run_dir


# --- training ---------------------------------------------------------------------------------

def training_data(train: np.ndarray, val: np.ndarray, cfg: ModelConfig, args, replicas: int) -> tuple[dict, object]:
    """model.fit's training data arguments and its validation data: arrays on one device, tf.data
    global batches under --distribute."""
    vx, vy = to_inputs_targets(val, cfg.duration_given_pitch)
    validation = distribute.batches(vx, vy, args.batch, replicas, None, "validation") if args.distribute else (vx, vy)
    if args.transpose and args.augment == "random":
        return {"x": random_transpose_batches(train, args.batch, args.transpose, cfg.vocab_sizes[1], args.seed,
                                              cfg.duration_given_pitch)}, validation
    x, y = to_inputs_targets(train, cfg.duration_given_pitch)
    if args.distribute:
        return {"x": distribute.batches(x, y, args.batch, replicas, args.seed, "training")}, validation
    return {"x": x, "y": y, "batch_size": args.batch, "shuffle": True}, validation


def start_model(args, cfg: ModelConfig, codec: Codec, strategy):
    """(model, initial epoch, best monitored loss, old history, old run folder): a new compiled
    model, or the checkpoint --resume names; under a strategy its variables live on every replica."""
    from playbach.trainer.model import build_model, compile_model

    with strategy.scope() if strategy else contextlib.nullcontext():
        if not args.resume:
            model = build_model(cfg)
            compile_model(model, cfg)
            return model, 0, None, {}, None
        model, state, old_history, old_run = resume_state(args.resume, cfg, codec)
    same_monitor = state.get("monitor", "val_loss") == args.monitor  # else its best means another loss
    return model, int(state["epoch"]), state.get("best_val_loss") if same_monitor else None, old_history, old_run


def fit(model, cfg, train, val, args, work: Path, initial_epoch: int, best: float | None, replicas: int = 1) -> dict:
    """Keras fit with early stopping and both checkpoints; returns this call's history."""
    import keras

    class SaveState(keras.callbacks.Callback):
        """train_state.json after every epoch, beside checkpoint.keras."""

        def __init__(self):
            super().__init__()
            self.best = best if best is not None else float("inf")
            self.steps = []   # batches per epoch, as run: the global batch's proof

        def on_epoch_begin(self, epoch, logs=None):
            self.steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            self.steps[-1] += 1

        def on_epoch_end(self, epoch, logs=None):
            self.best = min(self.best, float(logs[args.monitor]))
            (work / "train_state.json").write_text(json.dumps(
                {"epoch": epoch + 1, "best_val_loss": self.best, "monitor": args.monitor, "seed": args.seed}))

    state = SaveState()
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=args.monitor, mode="min", patience=args.patience),
        keras.callbacks.ModelCheckpoint(work / "model.keras", monitor=args.monitor, mode="min",
                                        save_best_only=True, initial_value_threshold=best),
        keras.callbacks.ModelCheckpoint(work / "checkpoint.keras"),
        state,
    ]
    if args.lr_decay:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=args.monitor, mode="min", factor=args.lr_decay,
                                                           patience=2, min_lr=1e-5))
    data, validation = training_data(train, val, cfg, args, replicas)
    result = model.fit(**data, validation_data=validation, epochs=args.epochs, initial_epoch=initial_epoch,
                       callbacks=callbacks, verbose=1 if sys.stderr.isatty() else 2)
    return {**{k: [float(v) for v in vs] for k, vs in result.history.items()}, "steps": state.steps}


def best_epoch(history: dict, monitor: str) -> int:
    values = history.get(monitor) or [0.0]
    return int(np.argmin(values)) + 1


def write_report(work: Path, corpus: Corpus, split: Split, result: dict, times: dict, args,
                 cfg: ModelConfig, codec: Codec, n_windows: int, history: dict, replicas: int = 1) -> dict:
    counts = token_counts(corpus)
    report = {
        "corpus": {"source": corpus.source, "pieces": len(corpus.pieces), "events": corpus.events,
                   "notes_read": corpus.notes, "grid": corpus.grid, "rounded_notes": corpus.rounded,
                   "rounded_share": corpus.rounded / max(corpus.notes, 1), "merged_notes": corpus.merged,
                   "unique_pitch_tokens": counts["unique_pitch_tokens"],
                   "series_tokens": counts["series_tokens"], "skipped_files": corpus.skipped_files,
                   "cached_files": corpus.cached_files},
        "split": {"train_pieces": split.train, "val_pieces": split.val, "test_pieces": split.test,
                  "holdout": args.holdout, "transpose": args.transpose, "augment": args.augment,
                  "train_windows": n_windows, "seed": args.seed, "corpus": corpus.source,
                  "corpus_sha256": corpus.sha256,
                  # train pieces left out because a valid/test piece has their notes (JSB only)
                  "dropped_train_pieces": corpus.dropped, "melody_shared": corpus.melody_shared},
        "training": {"monitor": args.monitor, "patience": args.patience, "batch": args.batch,
                     "stride": args.stride or max(1, args.window // 2), "max_epochs": args.epochs,
                     "lr_decay": args.lr_decay, "best_epoch": best_epoch(history, args.monitor),
                     "distribute": args.distribute, "replicas": replicas},
        "vocab_sizes": dict(zip(FIELDS, codec.sizes)),
        "model": cfg.to_dict(),
        **result,
        "time": times,
    }
    (work / "report.json").write_text(json.dumps(report, indent=2))
    return report


def work_folder(out: Path, task: distribute.Task | None) -> Path:
    """Where this process builds the run: `.NAME.tmp` beside --out, renamed to it at the end; or, on
    a worker that is not the chief, a temp folder: it runs the chief's callbacks too (the replicas
    stay in step), writes there, and removes it."""
    if task is not None and not task.chief:
        return Path(tempfile.mkdtemp(prefix=f"playbach-{task.role}{task.index}-"))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(f".{out.name}.tmp")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    return work


def run(args) -> int:
    started = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not args.resume:
        raise UserError(f"{out} already exists: choose another --out, or --resume {out}/checkpoint.keras")

    if args.voices != "off" and args.pitch != "relative":   # before the corpus is read
        raise UserError(f"--voices {args.voices} needs --pitch relative (or --voices off)")
    if args.duration == "given-pitch" and args.pitch != "relative":
        raise UserError("--duration given-pitch needs --pitch relative (or --duration alone)")
    benchmark = bool(args.corpus) and looks_like_jsb(args.corpus)
    task = distribute.check(args, os.environ)   # a broken TF_CONFIG fails before the corpus is read
    if benchmark and args.holdout:
        raise UserError(f"--holdout: {args.corpus} has its own train / valid / test split, used as is")
    if benchmark:
        corpus, split = jsb_corpus(args.corpus)
    else:
        corpus = load_corpus(args.corpus, workers=args.workers)
    log.info("corpus %s: %d pieces, %d events, grid %d (%d of %d notes rounded), %d overlaps merged, "
             "%d skipped", corpus.source, len(corpus.pieces), corpus.events, corpus.grid, corpus.rounded,
             corpus.notes, corpus.merged, len(corpus.skipped_files))
    if not benchmark:
        split = split_pieces([p.name for p in corpus.pieces], args.seed, args.holdout)
    sides = split_events(corpus, split)
    codec = fit_codec(corpus, args.transpose)
    relative = args.pitch == "relative"
    cfg = ModelConfig(vocab_sizes=codec.sizes, embed_dims=tuple(args.embed), units=tuple(args.units),
                      dropout=args.dropout, recurrent_dropout=args.recurrent_dropout, window=args.window,
                      learning_rate=args.lr, relative_pitch=relative,
                      pitch_values=tuple(codec.vocab["pitch"]) if relative else (),
                      interval_dims=args.interval_dims, voices=list(LEVELS).index(args.voices),
                      duration_given_pitch=args.duration == "given-pitch")
    if benchmark:
        check_windows(corpus, cfg.window)
    stride = args.stride or max(1, args.window // 2)
    train_w, val_w = prepare_windows(sides, codec, cfg, stride, args.transpose, corpus.source,
                                      args.augment)

    import keras  # after parsing: the parser's worker processes never see TensorFlow

    from playbach.trainer.curves import save_curves
    from playbach.trainer.evaluate import evaluate

    strategy = distribute.make_strategy(args.distribute, args.cpu_devices) if args.distribute else None
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if strategy:
        log.info("global batch %d: %d windows on each of %d replicas", args.batch,
                 distribute.check_batch(args.batch, replicas), replicas)
    keras.utils.set_random_seed(args.seed)
    model, initial_epoch, best, old_history, old_run = start_model(args, cfg, codec, strategy)

    chief = task is None or task.chief
    work = work_folder(out, task)
    # a `kill` (SIGTERM) unwinds like an exception, so the temp folder is removed too
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.resume and (old_run / "model.keras").exists():
            shutil.copy2(old_run / "model.keras", work / "model.keras")
        log.info("training on %d windows of %d events (%d validation windows), vocab %s",
                 len(train_w), cfg.window, len(val_w), dict(zip(FIELDS, codec.sizes)))
        t0 = time.perf_counter()
        history = fit(model, cfg, train_w, val_w, args, work, initial_epoch, best, replicas)
        train_s = time.perf_counter() - t0
        if not chief:
            shutil.rmtree(work)
            log.info("%s %d done: the chief writes %s", task.role, task.index, out)
            return 0
        history = {k: old_history.get(k, [])[:initial_epoch] + v for k, v in history.items()}
        (work / "history.json").write_text(json.dumps(history))
        save_curves(history, work / "curves.png")
        if not (work / "model.keras").exists():  # resumed and never beat the old best
            model.save(work / "model.keras")

        np.savez_compressed(work / "events.npz", **{f"{side}/{name}": v for side, pieces in sides.items()
                                                    for name, v in pieces.items()})
        best_model = load_keras_model(work / "model.keras")
        t1 = time.perf_counter()
        result = evaluate(best_model, codec, sides, cfg.voices, cfg.duration_given_pitch)
        (work / "run.json").write_text(json.dumps({
            "format": RUN_FORMAT, "model": cfg.to_dict(), "codec": codec.to_dict(), "seed": args.seed,
            "corpus": corpus.source, "memory": result["memory"]}, indent=1))
        times = {"parse_s": corpus.parse_s, "train_s": train_s, "evaluate_s": time.perf_counter() - t1,
                 "epochs": len(history.get("loss", [])), "total_s": time.perf_counter() - started}
        report = write_report(work, corpus, split, result, times, args, cfg, codec, len(train_w), history,
                              replicas)
        publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    t, b = report["test"], report["baseline"]["ngram"]
    log.info("test pitch top-1 %.3f (n-gram %.3f, order %d), pitch NLL %.3f (n-gram %.3f); %d epochs in %.0f s",
             t["pitch_top1"], b["pitch_top1"], b["pitch_order"], t["pitch_nll"], b["pitch_nll"],
             times["epochs"], train_s)
    log.info("with the repeat memory: pitch top-1 %.3f (n-gram with it %.3f)",
             report["test_memory"]["pitch_top1"], report["baseline"]["ngram_memory"]["pitch_top1"])
    log.info("run written to %s", out)
    return 0
