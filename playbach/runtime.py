"""Running a bundle's model one event at a time, on the CPU or a Coral Edge TPU.

    model = open_model(load_bundle("models/default"), accelerator="auto")
    model.reset()
    probs = model.step(np.array([onset_id, pitch_id, duration_id, velocity_id]))   # 4 arrays
    probs = given_pitch(probs, pitch_of_the_next_note)   # a duration head with a row per pitch

StepModel feeds one-hot inputs and carries the LSTM state between calls; WindowedModel (the
fallback) keeps the last N events and re-reads them all each call. A model with voice context
inputs (playbach/voices.py) gets them computed here from the events fed, with the bundle's codec.
Integer models are handled here: inputs quantized, outputs dequantized, and each state output
requantized with the params of the INPUT it is fed back into (the converter calibrates them
separately, so they can differ).

The interpreter is the first of ai_edge_litert, tflite_runtime, tensorflow.lite that imports;
TensorFlow only as a last resort (it is neither needed nor wanted on the Pi).
"""
from __future__ import annotations

import importlib
import logging
import platform
import time
from collections import deque
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable, Union

import numpy as np

from playbach.bundle import Bundle, ModelEntry, Tensor
from playbach.errors import UserError
from playbach.events import FIELDS, Codec
from playbach.voices import CONTEXT, VoiceContext

log = logging.getLogger(__name__)

INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
AUTO_BURST = 200  # steps timed on each accelerator when both work

_interpreter_module: tuple[ModuleType, str] | None = None
Interpreter = Any   # the TFLite Interpreter class of whichever module load_interpreter_module found


def load_interpreter_module() -> ModuleType:
    """The TFLite interpreter module (has Interpreter and load_delegate); the first one installed."""
    global _interpreter_module
    if _interpreter_module is None:
        errors = []
        for name in INTERPRETER_MODULES:
            try:
                if name == "tensorflow.lite":  # the public tf.lite API; load_delegate lives elsewhere there
                    lite = importlib.import_module("tensorflow").lite
                    module = SimpleNamespace(Interpreter=lite.Interpreter, load_delegate=lite.experimental.load_delegate)
                else:
                    module = importlib.import_module(name)
                _interpreter_module = (module, name.split(".")[0])
                break
            except ImportError as e:
                errors.append(f"{name}: {e}")
        else:
            raise UserError("no TFLite interpreter installed; `pip install ai-edge-litert` "
                            f"(tried {'; '.join(errors)})")
    return _interpreter_module[0]


def interpreter_name() -> str:
    load_interpreter_module()
    return _interpreter_module[1]


# --- quantization helpers ------------------------------------------------------------------------

def _dequantize(values: np.ndarray, row: Tensor) -> np.ndarray:
    if not row.quantized:
        return values.astype(np.float32, copy=False)
    return (values.astype(np.float32) - row.quantization.zero_point) * np.float32(row.quantization.scale)


def _quantize(values: np.ndarray, row: Tensor) -> np.ndarray:
    if not row.quantized:
        return values.astype(row.dtype, copy=False)
    info = np.iinfo(row.dtype)
    q = np.round(values / row.quantization.scale) + row.quantization.zero_point
    return np.clip(q, info.min, info.max).astype(row.dtype)


def _all_codes(row: Tensor) -> np.ndarray:
    info = np.iinfo(row.dtype)
    return np.arange(info.min, info.max + 1).astype(row.dtype)


def _code_table(values: np.ndarray, row: Tensor) -> tuple[np.ndarray, int]:
    """(values, offset): values[code + offset] is the entry of an 8-bit code (built over _all_codes)."""
    return values, -int(np.iinfo(row.dtype).min)


def _lookup(codes: np.ndarray, table: tuple[np.ndarray, int]) -> np.ndarray:
    return table[0][codes.astype(np.int16) + table[1]]


class _Runner:
    """An interpreter plus the bundle's input/output rows, tensors found by name."""

    def __init__(self, interpreter: Interpreter, entry: ModelEntry, backend: str, codec: Codec | None = None):
        self.interpreter = interpreter
        self.entry = entry
        self.name = entry.file
        self.backend = backend
        interpreter.allocate_tensors()
        by_name_in = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        by_name_out = {d["name"]: d["index"] for d in interpreter.get_output_details()}
        try:
            self.inputs = {r.role: (by_name_in[r.name], r) for r in entry.inputs}
            self.outputs = {r.role: (by_name_out[r.name], r) for r in entry.outputs}
        except KeyError as e:
            raise UserError(f"{self.name}: has no tensor {e} that bundle.json names") from e
        # the per-event inputs: the fields, then the voice context if the model reads it
        self.event_roles = [*FIELDS, *(r for r in CONTEXT if r in self.inputs)]
        if len(self.event_roles) > len(FIELDS) and codec is None:
            raise UserError(f"{self.name}: reads the voice context, which needs the bundle's codec")
        self.context = VoiceContext(codec, len(self.event_roles) - len(FIELDS)) \
            if len(self.event_roles) > len(FIELDS) else None
        # 8-bit outputs have 256 possible codes: dequantize through a table, not arithmetic
        # a duration head that depends on the pitch gives a row per pitch (playbach/heads.py)
        self._heads = []
        for f in FIELDS:
            index, row = self.outputs[f]
            table = _code_table(_dequantize(_all_codes(row), row), row) if row.quantized else None
            self._heads.append((index, table, row.shape[1:]))

    def _set(self, role: str, values: np.ndarray) -> None:
        index, row = self.inputs[role]
        self.interpreter.set_tensor(index, values)

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """(4,) token ids of the event fed -> its input ids, one per event role."""
        return self.context.row(ids) if self.context else np.asarray(ids, dtype=np.int64).reshape(len(FIELDS))

    def _probs(self) -> list[np.ndarray]:
        probs = []
        for index, table, shape in self._heads:
            values = self.interpreter.get_tensor(index).reshape(shape)
            probs.append(values.astype(np.float32, copy=False) if table is None else _lookup(values, table))
        return probs


class StepModel(_Runner):
    """One event in, next-event probabilities out; LSTM state carried in this object."""

    def __init__(self, interpreter: Interpreter, entry: ModelEntry, backend: str, codec: Codec | None = None):
        super().__init__(interpreter, entry, backend, codec)
        self.state_roles = [r.role for r in entry.inputs if r.role not in self.event_roles]
        # (output index, input index, code table or None) per state: an int8 state
        # output is requantized with its INPUT's params (real value = (q - zp) * scale on both
        # sides), through a 256-entry table from output code to input code
        self._feedback = []
        for role in self.state_roles:
            out_row, in_row = self.outputs[role][1], self.inputs[role][1]
            table = None
            if out_row.quantized and out_row.quantization != in_row.quantization:
                table = _code_table(_quantize(_dequantize(_all_codes(out_row), out_row), in_row), out_row)
            self._feedback.append((self.outputs[role][0], self.inputs[role][0], table))
        # each event role's one-hot rows, made once (a step sets 14 inputs: copying and filling
        # a fresh row per input per step was a third of a planned note's Python time);
        # quantized: "off" is the value of 0.0, "on" the value of 1.0
        self._onehot = []
        for role in self.event_roles:
            index, row = self.inputs[role]
            off, on = _quantize(np.array([0.0, 1.0], np.float32), row)
            rows = np.full((row.shape[-1], *row.shape), off, dtype=row.dtype)
            rows[np.arange(row.shape[-1]), 0, np.arange(row.shape[-1])] = on
            self._onehot.append((index, rows))
        self.reset()

    def reset(self) -> None:
        # the state as last fed back: arrays never changed in place, so save() can hand them out
        self._state = [_quantize(np.zeros(self.inputs[role][1].shape, np.float32), self.inputs[role][1])
                       for role in self.state_roles]
        self._set_state(self._state)
        if self.context:
            self.context.reset()

    def _set_state(self, values: list[np.ndarray]) -> None:
        for (_, in_index, _), value in zip(self._feedback, values):
            self.interpreter.set_tensor(in_index, value)

    def step(self, ids: np.ndarray) -> list[np.ndarray]:
        self.load(ids)
        return self.advance()

    def save(self) -> tuple:
        """The carried state, for restore(): the Improviser tries continuations from one point. Its
        arrays are never changed after (advance() makes new ones), so they are handed out as they are."""
        return self._state, self.context.save() if self.context else None

    def restore(self, state: tuple) -> None:
        self._state = state[0]
        self._set_state(self._state)
        if self.context:
            self.context.restore(state[1])

    def load(self, ids: np.ndarray) -> None:
        """Set the inputs of one event (the first half of step: calibration reads them here)."""
        set_tensor = self.interpreter.set_tensor
        for (index, rows), i in zip(self._onehot, self._rows(ids).tolist()):
            set_tensor(index, rows[i])

    def advance(self) -> list[np.ndarray]:
        """Run the loaded event, carry the state, return the next event's distributions."""
        self.interpreter.invoke()
        get_tensor = self.interpreter.get_tensor
        self._state = [get_tensor(out_index) if table is None else _lookup(get_tensor(out_index), table)
                       for out_index, _, table in self._feedback]
        self._set_state(self._state)
        return self._probs()


class WindowedModel(_Runner):
    """The last N events in (int32 ids), next-event probabilities out; slower, kept as a fallback.

    Until N events have been played the window is left-padded with the first event, the closest
    thing to "more of the same" the model has seen.
    """

    def __init__(self, interpreter: Interpreter, entry: ModelEntry, backend: str, codec: Codec | None = None):
        super().__init__(interpreter, entry, backend, codec)
        self.window = int(self.inputs[FIELDS[0]][1].shape[1])
        self.reset()

    def reset(self) -> None:
        self.history: deque = deque(maxlen=self.window)
        if self.context:
            self.context.reset()

    def save(self) -> tuple:
        return tuple(self.history), self.context.save() if self.context else None

    def restore(self, state: tuple) -> None:
        self.history = deque(state[0], maxlen=self.window)
        if self.context:
            self.context.restore(state[1])

    def step(self, ids: np.ndarray) -> list[np.ndarray]:
        self.history.append(self._rows(ids))
        events = list(self.history)
        events = [events[0]] * (self.window - len(events)) + events
        return self.predict_window(np.stack(events))

    def predict_window(self, window: np.ndarray) -> list[np.ndarray]:
        """Next-event probabilities after exactly these N events (N, event roles) of input ids."""
        for j, role in enumerate(self.event_roles):
            self._set(role, _quantize(window[:, j].reshape(1, -1).astype(np.float32), self.inputs[role][1]))
        self.interpreter.invoke()
        return self._probs()


Model = Union[StepModel, WindowedModel]


# --- opening a model on an accelerator -----------------------------------------------------------

def open_edgetpu_interpreter(model_path: str) -> Interpreter:
    """Interpreter with the Edge TPU delegate (Google's pycoral only if it is importable)."""
    module = load_interpreter_module()
    try:  # Google's pycoral (not the unrelated PyPI package of that name) knows the device names
        from pycoral.utils.edgetpu import make_interpreter  # type: ignore
        return make_interpreter(model_path)
    except ImportError:
        pass
    library = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")
    delegate = module.load_delegate(library)
    return module.Interpreter(model_path=model_path, experimental_delegates=[delegate])


def open_cpu_interpreter(model_path: str) -> Interpreter:
    return load_interpreter_module().Interpreter(model_path=model_path, num_threads=1)


def open_entry(entry: ModelEntry, model_path: str | Path, opener: Callable | None = None,
               backend: str = "cpu", codec: Codec | None = None) -> Model:
    """A StepModel or WindowedModel of one model file (on the CPU unless `opener` says otherwise);
    `codec` is needed by a model with voice context inputs."""
    cls = StepModel if entry.kind == "step" else WindowedModel
    return cls((opener or open_cpu_interpreter)(str(model_path)), entry, backend, codec)


def _build(bundle: Bundle, entry: ModelEntry, opener: Callable, backend: str) -> Model:
    return open_entry(entry, bundle.model_path(entry), opener, backend, bundle.codec)


def open_model(bundle: Bundle, accelerator: str = "auto", kind: str = "step", variant: str = "auto",
               edgetpu_opener: Callable | None = None) -> Model:
    """A StepModel or WindowedModel of the bundle on "cpu", "edgetpu" or "auto" (the faster that works).

    Variant "auto" means int8 on the Edge TPU (the only kind it runs) and on the CPU the variant
    that agrees best with the Keras model (the bundle's parity figures): int8 state error builds
    up as it is fed back, and the CPU has no need of full-integer arithmetic.
    `edgetpu_opener(model_path) -> interpreter` defaults to loading the real delegate; tests pass
    a fake one because no Coral is attached where they run.
    """
    if accelerator not in ("auto", "cpu", "edgetpu"):
        raise UserError(f"accelerator {accelerator!r}: choose auto, cpu or edgetpu")
    opener = edgetpu_opener or open_edgetpu_interpreter
    cpu_backend = f"cpu ({interpreter_name()})"
    cpu_variant = bundle.most_faithful_variant(kind) if variant == "auto" else variant
    tpu_variant = "int8" if variant == "auto" else variant
    if accelerator == "cpu":
        return _build(bundle, bundle.model_entry(kind, cpu_variant), open_cpu_interpreter, cpu_backend)
    if accelerator == "edgetpu":
        entry = bundle.model_entry(kind, tpu_variant, edgetpu=True)
        try:
            return _build(bundle, entry, opener, "edgetpu")
        except (OSError, ValueError, RuntimeError) as e:
            raise UserError(f"{bundle.model_path(entry)}: cannot open on the Edge TPU ({e})") from e

    cpu = _build(bundle, bundle.model_entry(kind, cpu_variant), open_cpu_interpreter, cpu_backend)
    try:
        tpu = _build(bundle, bundle.model_entry(kind, tpu_variant, edgetpu=True), opener, "edgetpu")
    except (UserError, OSError, ValueError, RuntimeError) as e:
        log.info("Edge TPU not used, running %s on %s: %s", cpu.entry.describe(), cpu_backend, e)
        return cpu
    times = {m.backend: time_steps(m, bundle, AUTO_BURST) for m in (cpu, tpu)}
    faster = min((cpu, tpu), key=lambda m: times[m.backend])
    log.info("auto accelerator: %s %.3f ms/event, edgetpu %.3f ms/event -> %s",
             cpu_backend, times[cpu_backend] * 1e3, times["edgetpu"] * 1e3, faster.backend)
    faster.reset()
    return faster


def time_steps(model: Model, bundle: Bundle, steps: int) -> float:
    """Median seconds per step over `steps` events of the bundle's openings."""
    return float(np.median(step_latencies(model, bundle, steps)))


def step_latencies(model: Model, bundle: Bundle, steps: int) -> np.ndarray:
    """Seconds of each of `steps` calls of model.step, fed the bundle's openings (token 0 if none)."""
    events = np.concatenate(bundle.openings) if bundle.openings else np.zeros((1, 4), np.int64)
    ids = bundle.codec.encode(events)
    model.reset()
    durations = np.empty(steps)
    for t in range(steps):
        start = time.perf_counter()
        model.step(ids[t % len(ids)])
        durations[t] = time.perf_counter() - start
    model.reset()
    return durations
