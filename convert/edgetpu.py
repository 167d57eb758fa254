"""Edge TPU: a static op check of a full-int8 model, and `edgetpu_compiler` when it is installed.

The compiler exists only for x86-64 Linux, so most machines that convert have none: then the
check below is what tells you whether the model would map, and the conversion goes on without
an *_edgetpu.tflite (the Pi then runs the int8 model on its CPU); `playbach edgetpu BUNDLE`
adds one later, on any machine that has the compiler.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from playbach.edgetpu_compile import COMPILER, compile_model, find_compiler
from playbach.errors import UserError

log = logging.getLogger(__name__)

# The "Supported operations" table of Coral's "TensorFlow models on the Edge TPU"
# (https://coral.ai/docs/edgetpu/models-intro/#supported-operations), written as TFLite builtin
# op names. The Edge TPU runs them only with int8/uint8 tensors, static shapes and batch 1; the
# table's per-op limits (e.g. "Pack: no packing in batch dimension") are not checked here.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
EDGETPU_SOURCE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"


def op_check(model_path: Path) -> dict:
    """Every op of the model with its count, and those not on the Edge TPU list (or not integer)."""
    from playbach.runtime import load_interpreter_module

    interpreter = load_interpreter_module().Interpreter(model_path=str(model_path))
    ops = interpreter._get_ops_details()  # the TFLite interpreters' only op listing
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    counts = Counter(op["op_name"] for op in ops)
    float_ops = Counter(op["op_name"] for op in ops
                        if any(tensors[i]["dtype"].__name__ == "float32" for i in op["inputs"] if i in tensors))
    unsupported = sorted(name for name in counts if name not in EDGETPU_OPS)
    return {"ops": dict(sorted(counts.items())), "unsupported": unsupported,
            "float_ops": dict(sorted(float_ops.items())), "source": EDGETPU_SOURCE,
            "maps_fully": not unsupported and not float_ops}


def compile_for_edgetpu(model_path: Path) -> tuple[Path | None, str]:
    """Run edgetpu_compiler next to the model when it is installed; returns (the *_edgetpu.tflite
    or None, a line for parity.json). Never fatal: a bundle without it can get one later with
    `playbach edgetpu BUNDLE` (playbach/edgetpu_compile.py, which this shares)."""
    try:
        compiled = compile_model(find_compiler(), model_path, model_path.parent)
    except UserError as e:
        line = f"{e}; or later: playbach edgetpu BUNDLE"
        log.info("%s", line)
        return None, line
    return compiled, f"{COMPILER} ok"
