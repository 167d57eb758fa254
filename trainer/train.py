"""`playbach train`: corpus -> split -> codec -> windows -> Keras fit -> evaluation -> run folder.

The run is built in a hidden temp folder beside --out and renamed at the end, so a failure
leaves nothing behind. The run folder (the converter reads it):

    model.keras       best epoch (lowest validation loss)
    checkpoint.keras  last epoch, with train_state.json, for --resume
    run.json          {"format": 1, "model", "codec", "seed", "corpus"}
    events.npz        field values per piece: "train/<piece>", "val/<piece>", "test/<piece>"
    report.json       corpus, split, test and n-gram figures, times
    history.json, curves.png

What is trained is a TrainingConfig (trainer/config.py: defaults, then --recipe FILE, then the
flags given); `run` goes through named stages: the request, the data, the model, the fit, the run
folder.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from playbach.events import FIELDS, Codec
from playbach.errors import UserError
from playbach.files import publish
from playbach.jsb import looks_like_jsb
from playbach.trainer import distribute
from playbach.trainer.config import AUGMENTS, DURATIONS, MONITORS, PITCHES, Request, TrainingConfig
from playbach.trainer.dataset import random_transpose_batches, to_inputs_targets
from playbach.trainer.model import ModelConfig, load_keras_model
from playbach.trainer.rundata import RunData, load_data, write_report
from playbach.trainer.runfolder import model_config
from playbach.voices import LEVELS

log = logging.getLogger(__name__)
RUN_FORMAT = 1


def fraction(text: str) -> float:
    """argparse type of a dropout rate: a number in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(text)
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainingConfig()

    def option(flag: str, help: str, **kwargs) -> None:
        """A flag of the training config: not given is None, so a recipe's value stands."""
        default = getattr(d, flag[2:].replace("-", "_"))
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        text = help if default is None else f"{help} (default: {shown})"
        parser.add_argument(flag, default=None, help=text.replace("%", "%%"), **kwargs)

    add_where_arguments(parser)
    option("--holdout", "glob of test piece names, e.g. '*-3cou*' (default: a seeded 10%)")
    option("--epochs", "most epochs (early stopping ends sooner)", type=int)
    option("--units", "LSTM sizes", type=int, nargs="+")
    option("--embed", "embedding sizes", type=int, nargs=4, metavar=("ONSET", "PITCH", "DURATION", "VELOCITY"))
    option("--window", "training window (events)", type=int)
    option("--stride", "window step (0: window // 2)", type=int)
    option("--batch", "global batch", type=int)
    option("--lr", "Adam learning rate", type=float)
    option("--dropout", "dropout on each LSTM layer's output", type=fraction)
    option("--recurrent-dropout", "dropout on the LSTM's state inside the recurrence (slower: no fused kernel)",
           type=fraction)
    option("--pitch", "relative: the model also hears the interval from the previous note and its pitch head "
           "adds interval logits (trainer/relative.py); absolute: pitch ids only", choices=PITCHES)
    option("--interval-dims", "interval embedding size", type=int)
    option("--cell-clip", "keep each LSTM's cell state within +-N in training as in play, so the full-int8 "
           "model (an Edge TPU's) chooses as the float one does (trainer/clipped.py); 0: not clipped", type=float)
    option("--voices", "on: each event also gets its voice, read from the events before it (slot, interval "
           "within the voice, where and which voice comes next: playbach/voices.py); chords: and the pitches "
           "sounding where the next note starts, and when the first of them ends; needs --pitch relative",
           choices=list(LEVELS))
    option("--duration", "given-pitch: the duration head also reads the pitch of the note it times (its "
           "interval from the voice's last note: a passing tone is short); alone: from the history only; "
           "given-pitch needs --pitch relative", choices=DURATIONS)
    option("--patience", "epochs without a better --monitor", type=int)
    option("--lr-decay", "multiply the learning rate by this after 2 epochs without a better --monitor "
           "(0: never)", type=fraction)
    option("--monitor", "validation loss for early stopping and the best checkpoint (on a small corpus "
           "onset/duration overfit while pitch still learns: val_pitch_loss)", choices=MONITORS)
    option("--seed", "seed of the split, the weights and the batches", type=int)
    option("--transpose", "augment training pieces by -N..+N semitones", type=int)
    option("--augment", "with --transpose: every training piece copied at each shift (copies), or each "
           "window moved by a fresh random shift every epoch (random)", choices=AUGMENTS)


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


def add_where_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of where and how to train, which a recipe does not hold."""
    parser.add_argument("--corpus", help="folder of .mid/.midi/.mxl/.musicxml/.krn files, or the JSB "
                        "benchmark's Jsb16thSeparated.json (its own split) (default: music21's bundled Bach chorales)")
    parser.add_argument("--out", required=True, help="run folder to write, e.g. runs/NAME")
    parser.add_argument("--recipe", help="TOML file of training settings, the flags' long names with _ for - "
                        "(e.g. recipes/default.toml: models/events'); flags given here override it")
    parser.add_argument("--representation", choices=("events", "grid"), default="events",
                        help="events: a note at a time, every part merged (any corpus); grid: the JSB file's "
                             "16th-step rows voice by voice, each voice holding or moving (trainer/grid.py)")
    parser.add_argument("--workers", type=int, default=2, help="parsing processes")
    parser.add_argument("--resume", help="checkpoint.keras (or its run folder) to continue from")
    parser.add_argument("--distribute", choices=distribute.MODES,
                        help="train on several devices through tf.distribute (--batch stays the global "
                             "batch): mirrored, every GPU of this machine; multi-worker, one process per "
                             "machine as TF_CONFIG says, the chief writes the run (docs/trainer.md)")
    parser.add_argument("--cpu-devices", type=int, default=1,
                        help="with --distribute mirrored: split the CPU into N logical devices, one "
                             "replica each (the distributed path on a machine without a GPU)")


# --- training ---------------------------------------------------------------------------------

def training_data(train: np.ndarray, val: np.ndarray, cfg: ModelConfig, request: Request,
                  replicas: int) -> tuple[dict, object]:
    """model.fit's training data arguments and its validation data: arrays on one device, tf.data
    global batches under --distribute."""
    c = request.config
    vx, vy = to_inputs_targets(val, cfg.duration_given_pitch)
    validation = distribute.batches(vx, vy, c.batch, replicas, None, "validation") if request.distribute else (vx, vy)
    if c.transpose and c.augment == "random":
        return {"x": random_transpose_batches(train, c.batch, c.transpose, cfg.vocab_sizes[1], c.seed,
                                              cfg.duration_given_pitch)}, validation
    x, y = to_inputs_targets(train, cfg.duration_given_pitch)
    if request.distribute:
        return {"x": distribute.batches(x, y, c.batch, replicas, c.seed, "training")}, validation
    return {"x": x, "y": y, "batch_size": c.batch, "shuffle": True}, validation


@dataclass
class Start:
    """Where the fit starts: a new compiled model or the checkpoint --resume names, its epoch and
    best monitored loss (None: none yet), the old run's history and folder, and the replicas."""
    model: object
    initial_epoch: int = 0
    best: float | None = None
    old_history: dict = field(default_factory=dict)
    old_run: Path | None = None
    replicas: int = 1


def start_model(request: Request, cfg: ModelConfig, codec: Codec, strategy) -> Start:
    """Under a strategy the model's variables live on every replica."""
    from playbach.trainer.model import build_model, compile_model

    replicas = strategy.num_replicas_in_sync if strategy else 1
    with strategy.scope() if strategy else contextlib.nullcontext():
        if not request.resume:
            model = build_model(cfg)
            compile_model(model, cfg)
            return Start(model, replicas=replicas)
        model, state, old_history, old_run = resume_state(request.resume, cfg, codec)
    same_monitor = state.get("monitor", "val_loss") == request.config.monitor  # else its best means another loss
    return Start(model, int(state["epoch"]), state.get("best_val_loss") if same_monitor else None, old_history,
                 old_run, replicas)


def callbacks(config: TrainingConfig, work: Path, best: float | None) -> list:
    """Early stopping, both checkpoints, train_state.json after every epoch, the plateau decay."""
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
            self.best = min(self.best, float(logs[config.monitor]))
            (work / "train_state.json").write_text(json.dumps(
                {"epoch": epoch + 1, "best_val_loss": self.best, "monitor": config.monitor, "seed": config.seed}))

    found = [SaveState(),
             keras.callbacks.EarlyStopping(monitor=config.monitor, mode="min", patience=config.patience),
             keras.callbacks.ModelCheckpoint(work / "model.keras", monitor=config.monitor, mode="min",
                                             save_best_only=True, initial_value_threshold=best),
             keras.callbacks.ModelCheckpoint(work / "checkpoint.keras")]
    if config.lr_decay:
        found.append(keras.callbacks.ReduceLROnPlateau(monitor=config.monitor, mode="min", factor=config.lr_decay,
                                                       patience=2, min_lr=1e-5))
    return found


def fit(model, cfg: ModelConfig, train: np.ndarray, val: np.ndarray, request: Request, work: Path,
        initial_epoch: int, best: float | None, replicas: int = 1) -> dict:
    """Keras fit with early stopping and both checkpoints; returns this call's history."""
    steps = callbacks(request.config, work, best)
    data, validation = training_data(train, val, cfg, request, replicas)
    result = model.fit(**data, validation_data=validation, epochs=request.config.epochs, initial_epoch=initial_epoch,
                       callbacks=steps, verbose=1 if sys.stderr.isatty() else 2)
    return {**{k: [float(v) for v in vs] for k, vs in result.history.items()}, "steps": steps[0].steps}


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


# --- the stages of a run ------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    if args.representation == "grid":
        from playbach.trainer import grid
        return grid.run(args)
    started = time.perf_counter()
    request = Request.from_args(args)
    task = check_request(request)
    data = load_data(request)
    import keras  # after parsing: the parser's worker processes never see TensorFlow

    strategy = distribute.make_strategy(request.distribute, request.cpu_devices) if request.distribute else None
    if strategy:
        log.info("global batch %d: %d windows on each of %d replicas", request.config.batch,
                 distribute.check_batch(request.config.batch, strategy.num_replicas_in_sync),
                 strategy.num_replicas_in_sync)
    keras.utils.set_random_seed(request.config.seed)
    start = start_model(request, data.model, data.codec, strategy)
    report = train_and_write(request, data, start, task, started)
    if report is not None:
        log_summary(report, request.out)
    return 0


def check_request(request: Request) -> distribute.Task | None:
    """Everything that can be refused before the corpus is read; this process's multi-worker Task."""
    if request.out.exists() and not request.resume:
        raise UserError(f"{request.out} already exists: choose another --out, or --resume "
                        f"{request.out}/checkpoint.keras")
    task = distribute.check(request, os.environ)   # a broken TF_CONFIG fails before the corpus is read
    if request.corpus and looks_like_jsb(request.corpus) and request.config.holdout:
        raise UserError(f"--holdout: {request.corpus} has its own train / valid / test split, used as is")
    return task


def train_and_write(request: Request, data: RunData, start: Start, task: distribute.Task | None,
                    started: float) -> dict | None:
    """Fit in the work folder and publish the run there; the report, or None on a worker that is
    not the chief (it trains in step and writes nothing)."""
    work = work_folder(request.out, task)
    # a `kill` (SIGTERM) unwinds like an exception, so the temp folder is removed too
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if request.resume and (start.old_run / "model.keras").exists():
            shutil.copy2(start.old_run / "model.keras", work / "model.keras")
        log.info("training on %d windows of %d events (%d validation windows), vocab %s",
                 len(data.train), data.model.window, len(data.val), dict(zip(FIELDS, data.codec.sizes)))
        t0 = time.perf_counter()
        history = fit(start.model, data.model, data.train, data.val, request, work, start.initial_epoch,
                      start.best, start.replicas)
        train_s = time.perf_counter() - t0
        if task is not None and not task.chief:
            shutil.rmtree(work)
            log.info("%s %d done: the chief writes %s", task.role, task.index, request.out)
            return None
        history = {k: start.old_history.get(k, [])[:start.initial_epoch] + v for k, v in history.items()}
        report = write_run(work, request, data, start, history, {"train_s": train_s, "started": started})
        publish(work, request.out)
        return report
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_run(work: Path, request: Request, data: RunData, start: Start, history: dict, clock: dict) -> dict:
    """Everything but the checkpoints into the work folder: history and curves, the best model,
    the pieces, its evaluation, run.json and report.json."""
    from playbach.trainer.curves import save_curves
    from playbach.trainer.evaluate import evaluate

    (work / "history.json").write_text(json.dumps(history))
    save_curves(history, work / "curves.png")
    if not (work / "model.keras").exists():  # resumed and never beat the old best
        start.model.save(work / "model.keras")
    np.savez_compressed(work / "events.npz", **{f"{side}/{name}": v for side, pieces in data.sides.items()
                                                for name, v in pieces.items()})
    t1 = time.perf_counter()
    result = evaluate(load_keras_model(work / "model.keras"), data.codec, data.sides, data.model.voices,
                      data.model.duration_given_pitch)
    (work / "run.json").write_text(json.dumps({
        "format": RUN_FORMAT, "model": data.model.to_dict(), "codec": data.codec.to_dict(),
        "seed": request.config.seed, "corpus": data.corpus.source, "memory": result["memory"]}, indent=1))
    times = {"parse_s": data.corpus.parse_s, "train_s": clock["train_s"], "evaluate_s": time.perf_counter() - t1,
             "epochs": len(history.get("loss", [])), "total_s": time.perf_counter() - clock["started"]}
    return write_report(work, data, result, times, request, history, start.replicas)


def log_summary(report: dict, out: Path) -> None:
    t, b = report["test"], report["baseline"]["ngram"]
    log.info("test pitch top-1 %.3f (n-gram %.3f, order %d), pitch NLL %.3f (n-gram %.3f); %d epochs in %.0f s",
             t["pitch_top1"], b["pitch_top1"], b["pitch_order"], t["pitch_nll"], b["pitch_nll"],
             report["time"]["epochs"], report["time"]["train_s"])
    log.info("with the repeat memory: pitch top-1 %.3f (n-gram with it %.3f)",
             report["test_memory"]["pitch_top1"], report["baseline"]["ngram_memory"]["pitch_top1"])
    log.info("run written to %s", out)
