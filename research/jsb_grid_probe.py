"""Would a model that decides each voice's length with the others sound like Bach? (issue 25 item 4)

The shipped model draws a note's duration at its onset, before the other voices' next notes
exist; docs/listening.md traces the takes' clashes to that. The JSB benchmark's own form is a
grid: every 16th step a row of four pitches. A model that reads it voice by voice (soprano, bass,
alto, tenor each 16th) decides at every step, knowing what the voices before it just chose,
whether each voice holds or moves: a note's length is settled with the chord it meets.

Not the pipeline: nothing here goes into a bundle or is played. It trains such a grid model
(Keras, the same size as one member of models/default: two LSTM layers of 256), scores the test
split in nats per 16th step (in float, and through the step model converted as the shipped one
is, whose invoke it times beside the shipped one's), draws takes with numpy from the trained
weights (state carried, as the player would), and measures them with playbach/listening.py
beside the test chorales, as `playbach listen` does:

    .venv/bin/python research/jsb_grid_probe.py --out bench/results/jsb_grid_probe.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from playbach.events import notes_to_events
from playbach.files import write_text_atomically
from playbach.jsb import GRID, voice_notes
from playbach.listening import Notes, measure_piece, pooled_histograms, summarize
from playbach.midifile import write_midi

JSB = "../shared/corpus/jsb-chorales/Jsb16thSeparated.json"
ORDER = (0, 3, 1, 2)        # soprano, bass, alto, tenor: the outer voices first, as TonicNet orders them
VOCAB = 129                 # token 0: silent; pitch p: p + 1
BAR = 16                    # 16ths in a 4/4 bar: the position input
WINDOW_STEPS = 64           # four bars a training window
TRANSPOSE = 6
INPUTS = ("previous", "before", "voice", "position")
SIZES, DIMS = (VOCAB, VOCAB, 4, BAR), (64, 64, 4, 16)
LAYERS = 2
STATE = tuple(f"{k}{i}" for i in range(LAYERS) for k in "hc")   # the step model's state inputs


def tokens_of(rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """A piece's rows (steps, 4) -> per position: target, previous token, the voice's previous
    token, voice index in ORDER, 16th of the bar."""
    grid = np.asarray(rows)[:, ORDER] + 1
    steps = len(grid)
    target = grid.reshape(-1)
    previous = np.concatenate([[0], target[:-1]])
    before = np.vstack([np.zeros((1, 4), int), grid[:-1]]).reshape(-1)
    voice = np.tile(np.arange(4), steps)
    position = np.repeat(np.arange(steps) % BAR, 4)
    return target, previous, before, voice, position


def windows(pieces: list[np.ndarray], rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Training windows of WINDOW_STEPS steps (hop half a window), each piece moved by a fresh shift."""
    inputs, targets = [[], [], [], []], []
    for rows in pieces:
        shift = int(rng.integers(-TRANSPOSE, TRANSPOSE + 1))
        moved = np.where(rows >= 0, rows + shift, -1)
        target, *features = tokens_of(moved)
        n = WINDOW_STEPS * 4
        for lo in range(0, len(target) - n + 1, n // 2):
            targets.append(target[lo:lo + n])
            for store, f in zip(inputs, features):
                store.append(f[lo:lo + n])
    return [np.array(s) for s in inputs], np.array(targets)


def build(units: int, dropout: float):
    import keras
    from keras import layers
    ins = [keras.Input((None,), dtype="int32", name=n) for n in INPUTS]
    x = layers.Concatenate()([layers.Embedding(s, d, name=f"embed_{n}")(i)
                              for i, n, s, d in zip(ins, INPUTS, SIZES, DIMS)])
    for k in range(LAYERS):
        x = layers.LSTM(units, return_sequences=True, dropout=dropout, name=f"lstm_{k}")(x)
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(VOCAB, name="head")(x)
    model = keras.Model(ins, out)
    model.compile(keras.optimizers.Adam(0.003, clipnorm=1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class NumpyGrid:
    """The trained grid model stepped position by position with numpy, a batch of streams at once."""

    def __init__(self, model):
        self.embed = [model.get_layer(f"embed_{n}").get_weights()[0] for n in INPUTS]
        self.lstm = [model.get_layer(f"lstm_{k}").get_weights() for k in range(LAYERS)]
        self.head = model.get_layer("head").get_weights()

    def start(self, batch: int) -> list:
        units = self.lstm[0][1].shape[0]
        return [(np.zeros((batch, units)), np.zeros((batch, units))) for _ in self.lstm]

    def step(self, state: list, features: list[np.ndarray]) -> np.ndarray:
        x = np.concatenate([e[f] for e, f in zip(self.embed, features)], axis=1)
        for k, (kernel, recurrent, bias) in enumerate(self.lstm):
            h, c = state[k]
            z = x @ kernel + h @ recurrent + bias
            i, f, g, o = np.split(z, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            state[k] = (h, c)
            x = h
        return x @ self.head[0] + self.head[1]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_nll(grid: NumpyGrid, pieces: list[np.ndarray]) -> float:
    """Nats per 16th step over whole pieces, state carried, each piece from a zero state."""
    total, steps = 0.0, 0
    for rows in pieces:
        target, *features = tokens_of(rows)
        state = grid.start(1)
        for t in range(len(target)):
            logp = _log_softmax(grid.step(state, [f[t:t + 1] for f in features]))
            total -= logp[0, target[t]]
        steps += len(rows)
    return total / steps


def draw_takes(grid: NumpyGrid, openings: list[np.ndarray], steps: int, temperature: float,
               rng: np.random.Generator) -> np.ndarray:
    """Each opening's rows fed, then `steps` more rows drawn voice by voice: (takes, rows, 4), the
    file's voice order (soprano to bass)."""
    n, lead = len(openings), len(openings[0])
    rows = np.zeros((n, lead + steps, 4), int)
    rows[:, :lead] = np.stack(openings)[:, :, ORDER] + 1
    state, previous = grid.start(n), np.zeros(n, int)
    for t in range(lead + steps):
        for v in range(4):
            before = rows[:, t - 1, v] if t else np.zeros(n, int)
            logits = grid.step(state, [previous, before, np.full(n, v), np.full(n, t % BAR)])
            if t >= lead:
                p = np.exp(_log_softmax(logits / temperature))
                rows[:, t, v] = [rng.choice(VOCAB, p=q) for q in p]
            previous = rows[:, t, v]
    back = np.empty_like(rows)
    back[:, :, ORDER] = rows - 1
    return back


def step_model(model, units: int):
    """The trained grid model as a one-step Keras model (one-hot inputs, explicit LSTM state):
    the package's (playbach/trainer/grid.py), which a converted grid bundle runs."""
    from playbach.trainer.grid import GridConfig, step_model as one_step
    return one_step(model, GridConfig(units=units, dims=DIMS))


def invoke_ms(path: str, repeats: int = 3000) -> float:
    """Median ms of one invoke of a .tflite file's signature on the CPU (one thread), zero inputs."""
    from playbach.runtime import open_cpu_interpreter
    runner = open_cpu_interpreter(path).get_signature_runner()
    feed = {k: np.zeros(d["shape"], d["dtype"]) for k, d in runner.get_input_details().items()}
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        runner(**feed)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


class ConvertedGrid:
    """The converted grid step model behind NumpyGrid's start/step, one stream: what would play."""

    def __init__(self, path: str, units: int):
        from playbach.runtime import open_cpu_interpreter
        self.runner = open_cpu_interpreter(path).get_signature_runner()
        self.units, self.eyes = units, [np.eye(s, dtype=np.float32) for s in SIZES]

    def start(self, batch: int = 1) -> dict:
        return {n: np.zeros((1, self.units), np.float32) for n in STATE}

    def step(self, state: dict, features: list[np.ndarray]) -> np.ndarray:
        out = self.runner(**{n: eye[f] for n, eye, f in zip(INPUTS, self.eyes, features)}, **state)
        state.update({k: out[k] for k in state})
        return out["logits"].astype(np.float64)


def convert_step(model, units: int, work: str) -> str:
    """The grid step converted as the shipped step is (dynamic range): its path."""
    from playbach.convert.tflite import convert
    specs = {n: ((1, s), "float32") for n, s in zip(INPUTS, SIZES)}
    specs |= {n: ((1, units), "float32") for n in STATE}
    path = f"{work}/grid_step_dynamic.tflite"
    with open(path, "wb") as f:
        f.write(convert(step_model(model, units), specs, "dynamic"))
    return path


def cost(path: str, grid: NumpyGrid, units: int) -> dict:
    """The converted step's logits against numpy's, and its invoke beside the shipped bundle's step
    model, timed in one run."""
    ids = [np.array([67 + 1]), np.array([60 + 1]), np.array([2]), np.array([5])]   # any input will do
    played = ConvertedGrid(path, units)
    converted = played.step(played.start(), ids)
    shipped = "models/default/step_dynamic.tflite"
    return {"logits_max_abs_diff_vs_float": float(np.abs(converted - grid.step(grid.start(1), ids)).max()),
            "grid_step_ms": invoke_ms(path), "shipped_step_ms": invoke_ms(shipped),
            "grid_step_bytes": os.path.getsize(path), "shipped_step_bytes": os.path.getsize(shipped),
            "grid_steps_per_16th": 4, "shipped_steps_per_note": 1}


def listen(takes: np.ndarray, lead: int, bach: list[np.ndarray]) -> dict:
    def measured(rows, start):
        return measure_piece(Notes.of_events(notes_to_events(voice_notes(rows.tolist())), GRID), start)
    reference = [measured(rows, 0) for rows in bach]
    return {"bach": summarize(reference), "takes": summarize([measured(r, lead) for r in takes],
                                                             pooled_histograms(reference))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--takes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1088, help="16ths drawn after each opening")
    ap.add_argument("--temperatures", default="1.0,0.9,0.8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--midi-dir", help="write each temperature's first take here as MIDI")
    ap.add_argument("--load-weights", help="no training: these Keras weights (from --save-weights)")
    ap.add_argument("--save-weights", help="keep the trained Keras weights here (a .weights.h5 file)")
    ap.add_argument("--work", default="/tmp", help="where the converted grid step model is written")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import keras
    keras.utils.set_random_seed(args.seed)
    data = {k: [np.array(p) for p in v] for k, v in json.load(open(JSB)).items()}
    rng = np.random.default_rng(args.seed)
    model, t0 = build(args.units, args.dropout), time.time()
    valid_x, valid_y = windows(data["valid"], np.random.default_rng(1))
    best, history = None, []
    if args.load_weights:
        model.load_weights(args.load_weights)
    for epoch in range(0 if args.load_weights else args.epochs):
        x, y = windows(data["train"], rng)
        fit = model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(valid_x, valid_y))
        history.append({k: float(v[0]) for k, v in fit.history.items()})
        print(epoch, history[-1], f"{time.time() - t0:.0f}s", flush=True)
        if best is None or history[-1]["val_loss"] < best[0]:
            best = (history[-1]["val_loss"], model.get_weights())
        elif epoch > 0:   # no better than the best: halve the step, as the trainer's lr_decay does
            model.optimizer.learning_rate.assign(model.optimizer.learning_rate * 0.5)
    if best:
        model.set_weights(best[1])
    if args.save_weights:
        model.save_weights(args.save_weights)
    grid = NumpyGrid(model)
    path = convert_step(model, args.units, args.work)
    result = {"what": "research/jsb_grid_probe.py: a 16th-step grid model, voice by voice, on the JSB "
                      "chorales: test nats per 16th step, and its takes' listening measures",
              "cost": cost(path, grid, args.units), "args": vars(args), "train_s": time.time() - t0,
              "history": history,
              "test_nll_per_step16": test_nll(grid, data["test"]),
              "test_nll_per_step16_converted": test_nll(ConvertedGrid(path, args.units), data["test"])}
    openings = [data["train"][i][:BAR] for i in rng.choice(len(data["train"]), args.takes)]
    for temperature in [float(t) for t in args.temperatures.split(",") if t]:
        takes = draw_takes(grid, openings, args.steps, temperature, np.random.default_rng(args.seed + 100))
        result[f"temperature_{temperature}"] = listen(takes, BAR, data["test"])
        if args.midi_dir:
            write_midi(voice_notes(takes[0].tolist()), f"{args.midi_dir}/grid_t{temperature}_take0.mid", GRID)
    write_text_atomically(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
