"""Keras model -> .tflite bytes in four variants, and the input/output table the bundle records.

    float32   as trained
    float16   weights stored as float16, math in float32
    dynamic   int8 weights, float activations (dynamic-range quantization)
    int8      full integer: int8 weights, activations, inputs and outputs (what the Edge TPU needs),
              calibrated on a representative dataset of real inputs

Models are converted from a tf.function with named TensorSpecs, so the TFLite signature names are
the roles bundle.json records (onset, pitch, ..., h0, c0, ...) whatever TensorFlow calls the tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from playbach.bundle import VARIANTS, Quantization, Tensor

if TYPE_CHECKING:
    import keras


def _concrete_function(model, specs: dict[str, tuple[tuple[int, ...], str]]):
    import tensorflow as tf

    names = list(specs)
    signature = [tf.TensorSpec(shape, dtype, name=name) for name, (shape, dtype) in specs.items()]

    @tf.function(input_signature=signature)
    def serve(*args):
        return model(dict(zip(names, args)), training=False)

    return serve.get_concrete_function()


def convert(model: keras.Model, specs: dict[str, tuple[tuple[int, ...], str]], variant: str,
            representative: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None) -> bytes:
    """One variant of `model` with inputs `specs` (name -> (shape, dtype)) as .tflite bytes."""
    import tensorflow as tf

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    function = _concrete_function(model, specs)
    # Keras 3 variables are not tracked by the Keras model as TF sees it: hand the converter a
    # module holding the underlying tf.Variables so it freezes them into constants.
    holder = tf.Module()
    holder.weights = [w.value for w in model.weights]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never Flex ops
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        if representative is None:
            raise ValueError("int8 needs a representative dataset")
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def io_table(model_path: str | Path, roles_in: list[str], roles_out: list[str]) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Each signature input/output as a bundle Tensor (role, name, shape, dtype, quantization)."""
    from playbach.runtime import load_interpreter_module

    interpreter = load_interpreter_module().Interpreter(model_path=str(model_path))
    runner = interpreter.get_signature_runner()
    return (_rows(runner.get_input_details(), roles_in, model_path),
            _rows(runner.get_output_details(), roles_out, model_path))


def _rows(details: dict, roles: list[str], model_path) -> tuple[Tensor, ...]:
    missing = [r for r in roles if r not in details]
    if missing:
        raise RuntimeError(f"{model_path}: signature lacks {missing} (has {sorted(details)})")
    rows = []
    for role in roles:
        d = details[role]
        scale, zero_point = d["quantization"] if d.get("quantization") else (0.0, 0)
        rows.append(Tensor(role, d["name"], tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]).name,
                           Quantization(float(scale), int(zero_point))))
    return tuple(rows)
