"""The grid representation: a piece as its 16th-step rows, read voice by voice.

The JSB benchmark's own form: every 16th a row of four pitches. A grid model reads the rows in
ORDER (soprano, bass, alto, tenor) one voice at a time; each token is the voice's pitch (p + 1)
or 0 for silence, and equal tokens in a row after row are one held note. At every position the
model sees the token just before it, this voice's token a step earlier, which voice it is and
the 16th of the bar, and answers with the distribution of this voice's token: whether the voice
holds or moves is settled knowing what the voices before it just chose.

The trainer (trainer/grid.py) learns it, the converter (convert/grid.py) turns
its step into TFLite, and GridStep below runs that file; playbach/grid_improviser.py plays it.
Events (playbach/events.py) stay the one representation everything else speaks: a seed or a
phrase heard becomes rows here, and the rows drawn become events again.

Needs numpy only: the Pi imports this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from playbach.bundle import Bundle, ModelEntry
from playbach.errors import UserError

REPRESENTATION = "grid"     # bundle.json model["representation"] of a grid bundle
ORDER = (0, 3, 1, 2)        # soprano, bass, alto, tenor: the outer voices first (rows hold S, A, T, B)
VOICES = 4
VOCAB = 129                 # token 0: silent; pitch p: p + 1
BAR = 16                    # 16ths in a 4/4 bar: the position input
STEPS_PER_QUARTER = 4
INPUTS = ("previous", "before", "voice", "position")
SIZES = (VOCAB, VOCAB, VOICES, BAR)
LAYERS = 2
STATE = tuple(f"{k}{i}" for i in range(LAYERS) for k in "hc")   # the step model's state inputs
SILENT = 0
LONGEST = 128               # 16ths: the longest note or gap read from events (the chorales' longest note: 80)
MAX_TEMPERATURE = 10.0      # of a bundle's calibration: beyond it a model's choices are noise


def is_grid(bundle: Bundle) -> bool:
    return bundle.meta.model.get("representation") == REPRESENTATION


def downbeat(rows: np.ndarray) -> int:
    """The first row of a chorale's first full bar. The file has no bar lines, but a chorale
    ends with a bar's end: most begin with a quarter's upbeat, whose rows come before this one."""
    return len(rows) % BAR


def tokens_of(rows: np.ndarray, first: int = 0) -> tuple[np.ndarray, ...]:
    """A piece's rows (steps, 4; pitches, -1 silent; S, A, T, B) whose row `first` begins a bar
    -> per position in reading order: target token, previous token, the voice's token a step
    before, voice, 16th of the bar."""
    grid = np.asarray(rows)[:, ORDER] + 1
    steps = len(grid)
    target = grid.reshape(-1)
    previous = np.concatenate([[SILENT], target[:-1]])
    before = np.vstack([np.zeros((1, VOICES), int), grid[:-1]]).reshape(-1)
    voice = np.tile(np.arange(VOICES), steps)
    position = np.repeat((np.arange(steps) - first) % BAR, VOICES)
    return target, previous, before, voice, position


def rows_of_events(events: np.ndarray, ticks_per_quarter: int) -> np.ndarray:
    """Events (onset delta, pitch, duration, velocity) -> rows of tokens in ORDER, (steps, 4).
    At each 16th the sounding pitches, highest first, are the soprano, alto, tenor and bass: the
    highest to the soprano, the lowest to the bass, the others between (silent where fewer than
    four sound, beyond four the inner ones dropped). A tick grid finer than 16ths is rounded; a
    gap or a note longer than LONGEST 16ths is read as that long (a seed file's hour-long note
    is not an hour of rows)."""
    events = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    if not len(events):
        return np.zeros((0, VOICES), dtype=np.int64)
    longest = LONGEST * ticks_per_quarter // STEPS_PER_QUARTER
    onsets, durations = np.clip(events[:, 0], 0, longest), np.clip(events[:, 2], 1, longest)
    scale = STEPS_PER_QUARTER / ticks_per_quarter
    starts = np.round(np.cumsum(onsets) * scale).astype(np.int64)
    ends = np.maximum(starts + 1, np.round((np.cumsum(onsets) + durations) * scale).astype(np.int64))
    rows = np.zeros((int(ends.max()), VOICES), dtype=np.int64)
    for t in range(len(rows)):
        sounding = sorted(set(events[(starts <= t) & (ends > t), 1].tolist()), reverse=True)
        satb = _satb(sounding)
        rows[t] = [satb[v] for v in ORDER]
    return rows


def _satb(pitches: list[int]) -> list[int]:
    """Tokens for soprano, alto, tenor, bass from sounding pitches, highest first."""
    if not pitches:
        return [SILENT] * VOICES
    if len(pitches) == 1:
        return [pitches[0] + 1, SILENT, SILENT, SILENT]
    inner = [p + 1 for p in pitches[1:-1][:2]]
    inner += [SILENT] * (2 - len(inner))
    return [pitches[0] + 1, *inner, pitches[-1] + 1]


@dataclass(frozen=True)
class Calibration:
    """How a grid bundle's models' logits become the distribution played, fitted by likelihood
    on the validation split when the bundle is made (convert/grid.py): each member's logits
    divided by `temperature`, the members' distributions averaged, then the odds of the voice
    holding its note (its token a step before) raised to 1 / `hold_temperature`. A network
    trained with dropout is surer of holds than the chorales bear out; this is where that shows."""
    temperature: float = 1.0
    hold_temperature: float = 1.0

    @classmethod
    def from_dict(cls, d: object) -> "Calibration":
        """From bundle.json's model["calibration"] (absent: none); ValueError for anything but
        temperatures in (0, MAX_TEMPERATURE]."""
        d = {} if d is None else d
        if not isinstance(d, dict):
            raise ValueError(f"'calibration' must be an object, not {type(d).__name__}")
        values = [d.get(k, 1.0) for k in ("temperature", "hold_temperature")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_TEMPERATURE
                   for v in values):
            raise ValueError(f"'temperature' and 'hold_temperature' must be numbers in (0, {MAX_TEMPERATURE}]")
        return cls(float(values[0]), float(values[1]))

    def probs(self, logits: np.ndarray, hold: np.ndarray) -> np.ndarray:
        """Members' logits (members, n, VOCAB) and the hold token of each of n positions -> the
        distributions (n, VOCAB)."""
        p = softmax(np.asarray(logits, dtype=np.float64) / self.temperature).mean(axis=0)
        rows = np.arange(len(p))
        stay = np.clip(p[rows, hold], 1e-12, 1 - 1e-12)
        odds = (stay / (1 - stay)) ** (1 / self.hold_temperature)
        kept = odds / (1 + odds)
        p *= ((1 - kept) / (1 - stay))[:, None]
        p[rows, hold] = kept
        return p


class GridStep:
    """A grid bundle's converted step models, played as one: one position's inputs in, the
    calibrated mean of the members' distributions of its token out; each member's LSTM state
    carried here, save()/restore() to try continuations from one point."""

    def __init__(self, interpreters: list[Any], entries: list[ModelEntry], backend: str,
                 calibration: Calibration = Calibration()):
        self.entries, self.backend, self.calibration = entries, backend, calibration
        self.name = " + ".join(e.file for e in entries)
        self.runners = [i.get_signature_runner() for i in interpreters]
        for runner, entry in zip(self.runners, entries):
            missing = sorted(set(INPUTS + STATE) - set(runner.get_input_details()))
            if missing:
                raise UserError(f"{entry.file}: not a grid step model (no input {', '.join(missing)})")
        self.units = [int(r.get_input_details()[STATE[0]]["shape"][-1]) for r in self.runners]
        self.eyes = [np.eye(s, dtype=np.float32)[:, None, :] for s in SIZES]   # one-hot rows (1, size)
        self.reset()

    def reset(self) -> None:
        self.state = tuple({n: np.zeros((1, u), np.float32) for n in STATE} for u in self.units)

    def save(self) -> tuple:
        return self.state    # never changed in place: step() makes new dicts

    def restore(self, state: tuple) -> None:
        self.state = state

    def logits(self, ids) -> np.ndarray:
        """(previous token, the voice's token a step before, voice, 16th of the bar) in: each
        member's logits (members, 1, VOCAB) of that voice's token."""
        feed = {n: eye[int(i)] for n, eye, i in zip(INPUTS, self.eyes, ids)}
        outs = [runner(**feed, **state) for runner, state in zip(self.runners, self.state)]
        self.state = tuple({n: out[n] for n in STATE} for out in outs)
        return np.stack([out["logits"] for out in outs])

    def step(self, ids) -> np.ndarray:
        """The distribution (VOCAB,) played for the token of these inputs (logits())."""
        return self.calibration.probs(self.logits(ids), np.array([int(ids[1])]))[0]

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A whole chorale (rows, S A T B) fed from a zero state, each position given the tokens
        before it: the members' logits (members, positions, VOCAB), each position's hold token
        and its token."""
        self.reset()
        target, *features = tokens_of(rows, downbeat(rows))
        logits = np.concatenate([self.logits(ids) for ids in zip(*features)], axis=1)
        return logits, features[1], target


def open_grid(bundle: Bundle) -> GridStep:
    """The grid bundle's step models on the CPU, played as one (a grid model has no Edge TPU form)."""
    from playbach.runtime import interpreter_name, open_cpu_interpreter
    entries = [e for e in bundle.meta.models if e.kind == REPRESENTATION]
    if not entries:
        raise UserError(f"{bundle.path}: a grid bundle without a grid model file")
    try:
        calibration = Calibration.from_dict(bundle.meta.model.get("calibration"))
    except ValueError as e:
        raise UserError(f"{bundle.path / 'bundle.json'}: bad grid calibration: {e}") from e
    return GridStep([open_cpu_interpreter(str(bundle.model_path(e))) for e in entries], entries,
                    f"cpu ({interpreter_name()})", calibration)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Along the last axis."""
    z = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def nll_per_step(model: GridStep, pieces: list[np.ndarray]) -> float:
    """Nats per 16th step over whole chorales (rows, S A T B), each from a zero state: the
    benchmark's measure."""
    total, steps = 0.0, 0
    for rows in pieces:
        logits, hold, target = model.read(rows)
        total -= np.log(model.calibration.probs(logits, hold)[np.arange(len(target)), target]).sum()
        steps += len(rows)
    return float(total / max(steps, 1))
