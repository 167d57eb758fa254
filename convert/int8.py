"""The converter's one int8 path: full-integer models (int8 weights, activations, inputs and
outputs, what the Edge TPU runs), calibrated on real inputs.

Step form: converted from a twin of the step model made for int8 (trainer/step.build_step_model
with for_int8: each gate its own matmul; the cell state c clipped when the float model's |c| goes
beyond INT8_CELL_CLIP, where the run was not trained with its own clip; the pitch logits as one
matmul, trainer/int8_head.py, floored under the lowest top logit of the calibration inputs),
calibrated on the training pieces with the states *the twin* reaches when it plays them from the
start (calibration.py): a random state would spend the 256 levels on values the model never
produces. The clip is recorded on the bundle entry (`cell_clip`).

Windowed form: calibrated on random windows of the training pieces, in a child process, because
TF 2.21's int8 calibration of the LSTM's WHILE loop segfaults and must not take the conversion down.
"""
from __future__ import annotations

import multiprocessing
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from playbach.convert import calibration, tflite
from playbach.convert.forms import Forms, windowed_specs
from playbach.runtime import StepModel
from playbach.trainer.runfolder import load_run
from playbach.trainer.int8_head import LOGITS
from playbach.trainer.step import INT8_CELL_CLIP, build_ensemble_step_model, build_ensemble_windowed_model, \
    input_sizes, is_cell_state, member_models, member_role, state_sizes

CALIBRATION_EVENTS = 2000   # representative step inputs
LOGIT_FLOOR_BELOW = 8.0     # nats under the lowest top pitch logit seen in calibration


@dataclass(frozen=True)
class Int8Model:
    """One converted int8 model; cell_clip: the |c| bound a step model was made with, or None."""
    blob: bytes
    cell_clip: float | None = None


def convert(kind: str, forms: Forms, work: Path, step_float32: StepModel) -> Int8Model:
    """The int8 model of one form. `step_float32`: the float32 step model as the runtime plays it,
    whose states decide the cell clip. Raises whatever the TFLite converter raises."""
    if kind == "windowed":
        samples = calibration.window_samples(forms.source.rows("train"), forms.source.config.window)
        return Int8Model(_windowed_in_child(forms, work, samples))
    clip = cell_clip(forms, step_float32)
    trained = [m.model for m in forms.members]
    twin = build_ensemble_step_model(forms.configs, trained, for_int8=True, cell_clip=clip)
    samples = twin_samples(forms, work, twin)
    floor = logit_floor(forms, twin, samples)
    if floor is not None:   # the states do not depend on the head: the same samples calibrate it
        twin = build_ensemble_step_model(forms.configs, trained, for_int8=True, cell_clip=clip, logit_floor=floor)
    return Int8Model(tflite.convert(twin, forms.specs("step"), "int8", calibration.as_dataset(samples)), clip)


def logit_floor(forms: Forms, twin, samples: list[dict[str, np.ndarray]]) -> float | None:
    """The pitch logits' floor: LOGIT_FLOOR_BELOW under the lowest top logit any calibration input
    gives the floor-less `twin` (a pitch floored there was at most e^-LOGIT_FLOOR_BELOW as likely as the top one), or None
    for a model without the merged pitch head (absolute pitch)."""
    import keras

    tops = []
    for i, (config, member) in enumerate(zip(forms.configs, member_models(twin, len(forms.configs)))):
        if not config.relative_pitch:
            return None
        logits = keras.Model(member.inputs, member.get_layer(LOGITS).output)
        roles = list(input_sizes(config)) + [member_role(i, role) for role in state_sizes(config)]
        tops += [float(np.max(logits([sample[role] for role in roles]))) for sample in samples]
    return min(tops) - LOGIT_FLOOR_BELOW


def cell_clip(forms: Forms, step_float32: StepModel) -> float | None:
    """The |c| bound of the int8 model: the runs' own when they were trained with one (every form
    has it already, trainer/clipped.py); else INT8_CELL_CLIP when the float model's cell states go
    beyond it on the training pieces, else None: a clip the model never reaches would only widen c's
    int8 range to the bound."""
    own = [config.cell_clip for config in forms.configs]
    if all(own):
        return max(own)
    samples = calibration.step_samples(step_float32, forms.source.ids("train"))
    reached = max(float(np.abs(sample[role]).max()) for sample in samples for role in forms.states
                  if is_cell_state(role))
    return INT8_CELL_CLIP if reached > INT8_CELL_CLIP else None


def twin_samples(forms: Forms, work: Path, twin) -> list[dict[str, np.ndarray]]:
    """The calibration inputs: the twin, as float32 TFLite through the runtime, played over the
    training pieces (the temporary file is removed)."""
    entry = forms.write(work, "step", "float32", tflite.convert(twin, forms.specs("step"), "float32"),
                        name="step_int8_twin_float32.tmp")
    try:
        return calibration.step_samples(forms.open(work, entry), forms.source.ids("train"),
                                        count=CALIBRATION_EVENTS)
    finally:
        (work / entry.file).unlink()


def _windowed_in_child(forms: Forms, work: Path, samples: list[dict]) -> bytes:
    """Windowed int8 in a separate process. Raises RuntimeError with the child's fate."""
    samples_path, out_path = work / "windowed_samples.npz", work / "windowed_int8.tmp"
    np.savez(samples_path, **{f"{i}/{k}": v for i, s in enumerate(samples) for k, v in s.items()})
    child = multiprocessing.get_context("spawn").Process(
        target=_windowed_child, args=([str(m.path) for m in forms.members], str(samples_path), str(out_path)))
    child.start()
    child.join()
    samples_path.unlink()
    if child.exitcode != 0 or not out_path.exists():
        fate = (f"killed by signal {-child.exitcode} ({signal.Signals(-child.exitcode).name})"
                if child.exitcode and child.exitcode < 0 else f"exit code {child.exitcode}")
        raise RuntimeError(f"TFLite int8 calibration of the windowed model crashed ({fate})")
    blob = out_path.read_bytes()
    out_path.unlink()
    return blob


def _windowed_child(run_paths: list[str], samples_path: str, out_path: str) -> None:
    members = [load_run(p) for p in run_paths]
    config = members[0].config
    with np.load(samples_path) as npz:
        count = len({key.split("/")[0] for key in npz.files})
        samples = [{name: npz[f"{i}/{name}"] for name in config.input_names} for i in range(count)]
    model = build_ensemble_windowed_model([m.config for m in members], [m.model for m in members])
    Path(out_path).write_bytes(tflite.convert(model, windowed_specs(config), "int8",
                                              calibration.as_dataset(samples)))
