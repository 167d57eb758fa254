"""Relative pitch: the model hears and says intervals as well as notes.

Bach's figures recur in every key: a run up the scale is "a step up, a step up" wherever it
starts. With absolute pitch ids alone, a small corpus (the cello suites: 24,000 training events
in six keys) teaches the model each figure once per key. Two additions fix that, both over the
codec's pitch values, both in the training model and in the converter's step model:

  * input: the interval from the previous event's pitch to this event's, embedded (a vector of
    zeros for a piece's first event, which has no previous one);
  * output: the pitch head's logits are absolute logits (key, register) plus interval logits
    read at the distance from this event's pitch:   logit[j] = a[j] + r[interval(now -> j)]

Intervals beyond +-MAX_INTERVAL semitones share the outermost id. Both layers are written over
one-hot pitch vectors and constant tables (matmul, multiply, sum), never a gather on ids, so the
training graph and the step graph are the same ops, and the step model stays within what full
int8 and the Edge TPU run (FULLY_CONNECTED, RESHAPE, MUL, SUM).

What it buys on the cello suites is measured in docs/trainer.md.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from keras import layers, ops

MAX_INTERVAL = 24  # semitones; two octaves hold every melodic step of the corpora


def interval_ids(pitch_values: Sequence[int]) -> np.ndarray:
    """(V, V) int: [i, j] is the id of the interval from pitch i to pitch j, 0..2*MAX_INTERVAL."""
    v = np.asarray(pitch_values, dtype=np.int64)
    return (np.clip(v[None, :] - v[:, None], -MAX_INTERVAL, MAX_INTERVAL) + MAX_INTERVAL).astype(np.int32)


NUM_INTERVALS = 2 * MAX_INTERVAL + 1


class PitchOneHots(layers.Layer):
    """Pitch ids (batch, time) -> (previous pitch, this pitch) as one-hot floats (batch, time, V);
    the previous one of the first step is all zeros (for a training window that starts inside a
    piece too: the model learns to start without one, as the device does after a reset). The step
    model gets its one-hots from the runtime and carries the previous one as state."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size

    def call(self, ids):
        current = ops.one_hot(ids, self.vocab_size)
        previous = ops.pad(current[:, :-1], ((0, 0), (1, 0), (0, 0)))
        return previous, current

    def compute_output_shape(self, ids_shape):
        shape = tuple(ids_shape) + (self.vocab_size,)
        return shape, shape

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size}


class OneHot(layers.Layer):
    """Ids (batch, time) -> one-hot floats (batch, time, size): the voice context's pitch as the
    training model reads it; the step model gets that one-hot from the runtime."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def call(self, ids):
        return ops.one_hot(ids, self.size)

    def compute_output_shape(self, ids_shape):
        return tuple(ids_shape) + (self.size,)

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}


class IntervalEmbedding(layers.Layer):
    """(previous pitch one-hot, pitch one-hot) -> the embedding of the interval between them."""

    def __init__(self, pitch_values: Sequence[int], dims: int, **kwargs):
        super().__init__(**kwargs)
        self.pitch_values, self.dims = [int(p) for p in pitch_values], int(dims)
        # rows j*V + i: the interval id from previous pitch i to pitch j
        self._by_pitch = interval_ids(self.pitch_values).T.reshape(-1)

    def build(self, previous_shape, pitch_shape):
        self.embeddings = self.add_weight(shape=(NUM_INTERVALS, self.dims), initializer="uniform",
                                          name="embeddings")

    def call(self, previous, pitch):
        v = len(self.pitch_values)
        # pitch @ table picks, for this pitch, the embedding of every possible previous pitch
        table = ops.reshape(ops.take(self.embeddings, self._by_pitch, axis=0), (v, v * self.dims))
        per_previous = ops.reshape(ops.matmul(pitch, table), ops.shape(pitch)[:-1] + (v, self.dims))
        return ops.sum(ops.expand_dims(previous, -1) * per_previous, axis=-2)

    def compute_output_shape(self, previous_shape, pitch_shape):
        return tuple(pitch_shape[:-1]) + (self.dims,)

    def get_config(self) -> dict:
        return {**super().get_config(), "pitch_values": self.pitch_values, "dims": self.dims}


class RelativeLogits(layers.Layer):
    """(interval logits, pitch one-hot) -> logits over pitches: [j] = r[interval(pitch -> j)]."""

    def __init__(self, pitch_values: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.pitch_values = [int(p) for p in pitch_values]
        v = len(self.pitch_values)
        # select[i, k, j] = 1 where the interval from pitch i to pitch j has id k
        select = np.zeros((v, NUM_INTERVALS, v), dtype=np.float32)
        ids = interval_ids(self.pitch_values)
        for i in range(v):
            select[i, ids[i], np.arange(v)] = 1.0
        self._select = select.reshape(v, NUM_INTERVALS * v)

    def call(self, interval_logits, pitch):
        v = len(self.pitch_values)
        per_interval = ops.reshape(ops.matmul(pitch, self._select), ops.shape(pitch)[:-1] + (NUM_INTERVALS, v))
        return ops.sum(ops.expand_dims(interval_logits, -1) * per_interval, axis=-2)

    def compute_output_shape(self, interval_logits_shape, pitch_shape):
        return tuple(pitch_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "pitch_values": self.pitch_values}


def interval_input(previous, pitch, pitch_values: Sequence[int], dims: int):
    """The interval embedding, as the model and the step model both name it."""
    return IntervalEmbedding(pitch_values, dims, name="embed_interval")(previous, pitch)


def pitch_head(h, pitch, pitch_values: Sequence[int], voice_pitch=None):
    """softmax(absolute logits + interval logits read from this pitch [+ interval logits read from
    the last pitch of the next event's voice, playbach/voices.py]): the pitch distribution."""
    logits = [layers.Dense(len(pitch_values), name="head_pitch")(h),
              RelativeLogits(pitch_values, name="relative_pitch")(
                  layers.Dense(NUM_INTERVALS, name="head_interval")(h), pitch)]
    if voice_pitch is not None:   # a voice moves by step from its own last note, not the last event's
        logits.append(RelativeLogits(pitch_values, name="relative_voice")(
            layers.Dense(NUM_INTERVALS, name="head_voice_interval")(h), voice_pitch))
    return layers.Activation("softmax", name="softmax_pitch")(layers.Add(name="add_pitch")(logits))


DURATION_DIMS = 32   # the duration head's hidden layer


class DurationGivenPitch(layers.Layer):
    """The duration head given the next note's pitch p (its own and its interval from a reference
    pitch: the voice's last pitch with voices, else the current event's):

        softmax(out(relu(a(h) + e_pitch[p] + e_interval[interval(reference -> p)])))

    A note's length depends on what the note is (a passing tone is short), which an independent
    head cannot know. Trained on the target's pitch (teacher forcing: `next_pitch` one-hot given);
    for inference (`next_pitch` None) it gives every pitch's distribution, (..., V, durations), so
    one invoke still returns all a sampler needs: it draws the pitch, then the duration from its row.
    Written as matmuls over one-hots and constant tables, like the layers above."""

    def __init__(self, pitch_values: Sequence[int], durations: int, dims: int = DURATION_DIMS, **kwargs):
        super().__init__(**kwargs)
        self.pitch_values, self.durations, self.dims = [int(p) for p in pitch_values], int(durations), int(dims)
        # rows i, columns j*dims..: the interval id from reference pitch i to next pitch j
        self._by_reference = interval_ids(self.pitch_values).reshape(-1)

    def build(self, h_shape, reference_shape, next_pitch_shape=None):
        v = len(self.pitch_values)
        self.hidden = self.add_weight(shape=(h_shape[-1], self.dims), initializer="glorot_uniform", name="hidden")
        self.bias = self.add_weight(shape=(self.dims,), initializer="zeros", name="bias")
        self.pitch_embeddings = self.add_weight(shape=(v, self.dims), initializer="uniform", name="pitch_embeddings")
        self.interval_embeddings = self.add_weight(shape=(NUM_INTERVALS, self.dims), initializer="uniform",
                                                   name="interval_embeddings")
        self.out = self.add_weight(shape=(self.dims, self.durations), initializer="glorot_uniform", name="out")
        self.out_bias = self.add_weight(shape=(self.durations,), initializer="zeros", name="out_bias")

    def call(self, h, reference, next_pitch=None):
        v = len(self.pitch_values)
        table = ops.reshape(ops.take(self.interval_embeddings, self._by_reference, axis=0), (v, v * self.dims))
        per_pitch = ops.reshape(ops.matmul(reference, table), ops.shape(reference)[:-1] + (v, self.dims))
        per_pitch = per_pitch + self.pitch_embeddings                              # (..., V, dims)
        hidden = ops.expand_dims(ops.matmul(h, self.hidden) + self.bias, -2)     # (..., 1, dims)
        z = ops.relu(hidden + per_pitch)
        if next_pitch is not None:                                               # the target's row only
            z = ops.sum(ops.expand_dims(next_pitch, -1) * z, axis=-2)
        # a 2-D matmul (FULLY_CONNECTED in TFLite; a 3-D one would be BATCH_MATMUL, which the Edge TPU lacks)
        logits = ops.matmul(ops.reshape(z, (-1, self.dims)), self.out) + self.out_bias
        return ops.softmax(ops.reshape(logits, ops.shape(z)[:-1] + (self.durations,)), axis=-1)

    def compute_output_shape(self, h_shape, reference_shape, next_pitch_shape=None):
        if next_pitch_shape is not None:
            return tuple(h_shape[:-1]) + (self.durations,)
        return tuple(h_shape[:-1]) + (len(self.pitch_values), self.durations)

    def get_config(self) -> dict:
        return {**super().get_config(), "pitch_values": self.pitch_values, "durations": self.durations,
                "dims": self.dims}


CUSTOM_OBJECTS = {cls.__name__: cls for cls in (PitchOneHots, OneHot, IntervalEmbedding, RelativeLogits,
                                                DurationGivenPitch)}
