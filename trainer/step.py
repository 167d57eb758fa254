"""The two inference forms of a trained model, rebuilt with its weights.

Step model: one event in, the next event's four distributions out, each LSTM layer's h and c as
explicit inputs and outputs. The work per note is constant however long the piece has played,
and the graph is plain FULLY_CONNECTED/ADD/MUL/LOGISTIC/TANH/SOFTMAX at batch 1:

    onset, pitch, duration, velocity   one-hot float (1, V)   -> Dense(no bias) = embedding rows
                                                                 (a matmul, so no GATHER: the
                                                                  Edge TPU can run it)
    concat -> LSTMCell_0(h0, c0) -> LSTMCell_1(h1, c1) ...       weights of lstm_<i>.cell
    head_<field>                                                  softmax, as trained

With voices (playbach/voices.py) the five context inputs come after the fields, one-hot like
them; the runtime computes them from the events it was fed (VoiceContext), as the trainer did.

With relative pitch (trainer/relative.py) the previous event's pitch one-hot is one more state,
prev_pitch: its output is this event's pitch one-hot, so the runtime feeds it back like h and c
and its zeros at reset mean "no previous note", as at the start of a training piece. The
interval embedding and the relative pitch head are the training model's own layers.

Windowed model: the training model at batch 1 and a fixed window of N int32 ids, last step only.

Several trained runs of the same inputs make one ensemble model of either form (the converter's
`convert RUN RUN ...`): every run's network on the same inputs, each with its own state in the step
form, their four distributions averaged.

`KerasStepModel` runs the step model on the desktop with the same reset()/step() as the TFLite
runtime on the Pi, so `playbach generate` and `playbach play` share one loop (playbach.improviser).
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from playbach.events import FIELDS, Codec
from playbach.trainer.model import CONTEXT_DIMS, ModelConfig, build_model, heads
from playbach.voices import VoiceContext, context_names, context_sizes

if TYPE_CHECKING:   # Keras is imported only when a model is built
    import keras

PREVIOUS_PITCH = "prev_pitch"


def state_sizes(config: ModelConfig) -> dict[str, int]:
    """The step model's state inputs and outputs and their widths: h0, c0, h1, c1, ... in layer
    order, then (relative pitch) the previous event's pitch one-hot, zeros before the first event."""
    sizes = {f"{kind}{i}": units for i, units in enumerate(config.units) for kind in ("h", "c")}
    if config.relative_pitch:
        sizes[PREVIOUS_PITCH] = config.vocab_sizes[1]
    return sizes


def input_sizes(config: ModelConfig) -> dict[str, int]:
    """The step model's per-event inputs (fields, then context) and their one-hot widths."""
    sizes = dict(zip(FIELDS, config.vocab_sizes))
    context = context_sizes(config.vocab_sizes[1])
    sizes |= {name: context[name] for name in context_names(config.voices)}
    return sizes


INT8_CELL_CLIP = 8.0


def build_step_model(config: ModelConfig, trained: keras.Model, for_int8: bool = False,
                     cell_clip: float | None = None, name: str = "playbach_step", input_prefix: str = "",
                     logit_floor: float | None = None) -> keras.Model:
    """Keras step model with the weights of `trained` (a model from build_model); outputs a dict by role.

    `for_int8` makes the twin that full-integer quantization is calibrated on, with three changes
    that keep the int8 model's pitch choices close to the float model's (docs/converter.md):
      * each cell state c is clipped to +-cell_clip after every step (the builder passes
        INT8_CELL_CLIP when the float model's |c| goes beyond it; a model trained with its own
        clip, config.cell_clip, has it in every form and needs none): a free LSTM's c wanders to
        +-100 and more, which at 256 int8 levels leaves a step of ~1 where tanh(c) needs ~0.05;
        past |c| = 8 tanh(c) is 1 to 7 digits anyway (float cost: ~1% agreement). Not clipping
        when |c| stays small matters too: the clip's int8 MIN/MAX widen c's range to the bound;
      * the gates are computed by four matmuls (LSTMCell implementation=1, same math), so each
        gate's pre-activation gets its own int8 scale instead of sharing one;
      * the pitch logits are one matmul (trainer/int8_head.py), floored at `logit_floor` when given.
    """
    import keras
    from keras import layers

    from playbach.trainer import int8_head, relative

    sizes = input_sizes(config) | state_sizes(config)
    inputs = {role: keras.Input(shape=(size,), batch_size=1, dtype="float32", name=input_prefix + role)
              for role, size in sizes.items()}

    # in the training model's order: fields, context, interval
    dims = dict(zip(FIELDS, config.embed_dims)) | {n: CONTEXT_DIMS[n] for n in context_names(config.voices)
                                                   if n in CONTEXT_DIMS}
    embedded = [layers.Dense(d, use_bias=False, name=f"embed_{name}")(inputs[name]) for name, d in dims.items()]
    outputs = {}
    if config.relative_pitch:
        embedded.append(relative.interval_input(inputs[PREVIOUS_PITCH], inputs["pitch"], config.pitch_values,
                                                config.interval_dims))
        outputs[PREVIOUS_PITCH] = layers.Identity(name="pass_pitch")(inputs["pitch"])
    x = layers.Concatenate(name="concat")(embedded)
    # a model trained with its cell state clipped (trainer/clipped.py) keeps its own clip in every form
    clip = config.cell_clip or (cell_clip if for_int8 else None)
    for i, units in enumerate(config.units):
        cell = layers.LSTMCell(units, implementation=1 if for_int8 else 2, name=f"lstm_{i}")
        x, (h, c) = cell(x, [inputs[f"h{i}"], inputs[f"c{i}"]])
        if clip:
            c = layers.Lambda(lambda t: keras.ops.clip(t, -clip, clip), name=f"clip_c{i}")(c)
        outputs[f"h{i}"], outputs[f"c{i}"] = h, c
    outputs |= heads(config, x, inputs["pitch"], inputs.get("voice_pitch"))
    if for_int8 and config.relative_pitch:   # the same pitch logits, rounded once (trainer/int8_head.py)
        outputs["pitch"] = int8_head.merged_pitch_head(trained, config.pitch_values, x, inputs["pitch"],
                                                       inputs.get("voice_pitch"), logit_floor)
    # inputs as a list, in role order: a dict call is matched by the tensors' names (the roles, or
    # with an ensemble member's prefix its caller passes a list)
    model = keras.Model(list(inputs.values()), outputs, name=name)

    # every layer with weights has its twin of the same name in the trained model (an LSTM's: its cell)
    for layer in model.layers:
        if layer.weights and layer.name != int8_head.LOGITS:   # that one is set from three of them
            source = trained.get_layer(layer.name)
            layer.set_weights(getattr(source, "cell", source).get_weights())
    return model


def build_windowed_model(config: ModelConfig, trained: keras.Model, batch_size: int | None = 1,
                         name: str = "playbach", input_prefix: str = "") -> keras.Model:
    """The training model at a fixed window N = config.window, last step only, trained weights."""
    # recurrent dropout is a no-op at inference; without it the LSTM keeps its plain fused form
    inference = replace(config, recurrent_dropout=0.0)
    model = build_model(inference, batch_size=batch_size, seq_len=config.window, return_sequences=False,
                        model_name=name, input_prefix=input_prefix)
    model.set_weights(trained.get_weights())
    return model


# --- ensembles: several trained runs played as one model ----------------------------------------

def member_role(i: int, role: str) -> str:
    """A state's role in an ensemble: member 0 keeps its own (h0, c0, ...), member i's are m<i>_h0 ..."""
    return role if i == 0 else f"m{i}_{role}"


def ensemble_state_sizes(configs: list[ModelConfig]) -> dict[str, int]:
    """Every member's state inputs/outputs and widths, member 0 first (one member: state_sizes)."""
    return {member_role(i, role): size for i, cfg in enumerate(configs) for role, size in state_sizes(cfg).items()}


def is_cell_state(role: str) -> bool:
    """An LSTM cell state c<i> of any member (the int8 builder clips those)."""
    name = role.rsplit("_", 1)[-1] if role.startswith("m") else role
    return name.startswith("c") and name[1:].isdigit()


def build_ensemble_step_model(configs: list[ModelConfig], trained: list[keras.Model], for_int8: bool = False,
                              cell_clip: float | None = None, logit_floor: float | None = None) -> keras.Model:
    """The members' step models on the same event inputs, each carrying its own state, their four
    distributions averaged: one invoke plays them all, and the runtime, which feeds back whatever
    state a model has, needs nothing new. The members must read the same inputs (same codec and
    voice context); one member is simply its step model."""
    if len(configs) == 1:
        return build_step_model(configs[0], trained[0], for_int8, cell_clip, logit_floor=logit_floor)
    import keras
    from keras import layers

    sizes = input_sizes(configs[0]) | ensemble_state_sizes(configs)
    inputs = {role: keras.Input(shape=(size,), batch_size=1, dtype="float32", name=role) for role, size in sizes.items()}
    outputs, heads_out = {}, []
    for i, (cfg, model) in enumerate(zip(configs, trained)):
        # a member's inputs are named apart: Keras wants every name in the graph unique
        member = build_step_model(cfg, model, for_int8, cell_clip, name=member_name(i), input_prefix=f"m{i}_in_",
                                  logit_floor=logit_floor)
        out = member([inputs[role] for role in input_sizes(cfg)] + [inputs[member_role(i, role)] for role in state_sizes(cfg)])
        outputs |= {member_role(i, role): out[role] for role in state_sizes(cfg)}
        heads_out.append(out)
    outputs |= {f: layers.Average(name=f"mean_{f}")([out[f] for out in heads_out]) for f in FIELDS}
    return keras.Model(inputs, outputs, name="playbach_ensemble")


def member_models(model: keras.Model, count: int) -> list[keras.Model]:
    """The step models of an ensemble step model's `count` members (one member: the model itself)."""
    return [model] if count == 1 else [model.get_layer(member_name(i)) for i in range(count)]


def member_name(i: int) -> str:
    """The layer name of an ensemble's member i (its step or windowed model)."""
    return f"member_{i}"


def build_ensemble_windowed_model(configs: list[ModelConfig], trained: list[keras.Model],
                                  batch_size: int | None = 1) -> keras.Model:
    """The members' windowed models on the same N-event window, their distributions averaged."""
    if len(configs) == 1:
        return build_windowed_model(configs[0], trained[0], batch_size)
    import keras
    from keras import layers

    inputs = {name: keras.Input(shape=(configs[0].window,), batch_size=batch_size, dtype="int32", name=name)
              for name in configs[0].input_names}
    outs = [build_windowed_model(cfg, model, batch_size, name=member_name(i), input_prefix=f"m{i}_in_")(
        [inputs[name] for name in cfg.input_names]) for i, (cfg, model) in enumerate(zip(configs, trained))]
    return keras.Model(inputs, {f: layers.Average(name=f"mean_{f}")([o[f] for o in outs]) for f in FIELDS},
                       name="playbach_ensemble_windowed")


class KerasStepModel:
    """The Keras step model with its state carried here: reset() and step(ids) -> four distributions,
    as playbach.runtime.StepModel does with the converted model (the codec for the voice context)."""

    def __init__(self, config: ModelConfig, trained: keras.Model, codec: Codec | None = None):
        import tensorflow as tf

        if config.voices and codec is None:
            raise ValueError("a model with voices needs the codec to compute its context inputs")
        self.model = build_step_model(config, trained)
        self.sizes = input_sizes(config)
        self.state_sizes = state_sizes(config)
        self.context = VoiceContext(codec, len(context_names(config.voices))) if config.voices else None
        self._call = tf.function(lambda inputs: self.model(inputs, training=False))
        self.reset()

    def reset(self) -> None:
        self.state = {role: np.zeros((1, size), np.float32) for role, size in self.state_sizes.items()}
        if self.context:
            self.context.reset()

    def save(self) -> tuple:
        """The carried state, for restore() (step() replaces self.state, never changes it in place)."""
        return self.state, self.context.save() if self.context else None

    def restore(self, state: tuple) -> None:
        self.state = state[0]
        if self.context:
            self.context.restore(state[1])

    def step(self, ids: np.ndarray) -> list[np.ndarray]:
        row = self.context.row(ids) if self.context else np.asarray(ids, dtype=np.int64).reshape(len(FIELDS))
        inputs = dict(self.state)
        for role, token in zip(self.sizes, row.tolist()):
            onehot = np.zeros((1, self.sizes[role]), np.float32)
            onehot[0, int(token)] = 1.0
            inputs[role] = onehot
        out = self._call(inputs)
        self.state = {role: np.asarray(out[role]) for role in self.state_sizes}
        return [np.asarray(out[field])[0] for field in FIELDS]
