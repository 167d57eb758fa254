"""The int8 twin's pitch head: the same logits in one matmul, rounded once.

The trained pitch head adds two or three parts (trainer/relative.py): absolute logits, interval
logits read from this pitch, and with voices interval logits read from the voice's last pitch. In
a full-int8 model each part is rounded to its own 256 levels and the sum once more, and the pitch
choice is where int8 costs the most (docs/converter.md). Every part is linear in h given the
one-hot pitches, so the sum is one FULLY_CONNECTED over [h, pitch (x) h, pitch, voice (x) h, voice]
(x: outer product), with the parts' weights gathered into one matrix: the int32 accumulator holds
the exact sum and only the logits are rounded. A floor on the logits (set from the calibration
data by the converter) keeps their 256 levels for the pitches that can be drawn, not for the least
likely one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from playbach.trainer.relative import interval_ids

if TYPE_CHECKING:
    import keras

LOGITS = "pitch_logits_int8"


def merged_weights(trained: keras.Model, pitch_values, voices: bool) -> list[np.ndarray]:
    """[kernel, bias] of the one matmul: rows h, then per part (this pitch, then the voice's)
    pitch (x) h and pitch, in the order merged_pitch_head concatenates them."""
    ids = interval_ids(pitch_values)                        # (V, V): interval id from pitch i to j
    kernel, bias = trained.get_layer("head_pitch").get_weights()
    rows = [kernel]
    for part in ("head_interval",) + (("head_voice_interval",) if voices else ()):
        w, b = trained.get_layer(part).get_weights()        # (units, intervals), (intervals,)
        units, v = w.shape[0], len(pitch_values)
        rows.append(w[:, ids].transpose(1, 0, 2).reshape(v * units, v))   # [(i, k), j] = w[k, ids[i, j]]
        rows.append(b[ids])                                               # [i, j] = b[ids[i, j]]
    return [np.concatenate(rows).astype(np.float32), bias]


def merged_pitch_head(trained: keras.Model, pitch_values, h, pitch, voice_pitch, floor: float | None):
    """softmax of the trained pitch head's logits, computed as one matmul (floored when `floor`)."""
    from keras import layers, ops

    def outer(reference):
        return layers.Lambda(lambda t: ops.reshape(t[0][:, :, None] * t[1][:, None, :], (1, -1)))([reference, h])

    parts = [h] + [x for ref in (pitch, voice_pitch) if ref is not None for x in (outer(ref), ref)]
    dense = layers.Dense(len(pitch_values), name=LOGITS)
    logits = dense(layers.Concatenate(name="pitch_parts_int8")(parts))
    dense.set_weights(merged_weights(trained, pitch_values, voice_pitch is not None))
    if floor is not None:
        logits = layers.Lambda(lambda t: ops.maximum(t, floor), name="floor_pitch_int8")(logits)
    return layers.Activation("softmax", name="softmax_pitch")(logits)
