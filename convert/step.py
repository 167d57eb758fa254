"""The two inference forms of a trained model, rebuilt with its weights.

Step model: one event in, the next event's four distributions out, each LSTM layer's h and c as
explicit inputs and outputs. The work per note is constant however long the piece has played,
and the graph is plain FULLY_CONNECTED/ADD/MUL/LOGISTIC/TANH/SOFTMAX at batch 1:

    onset, pitch, duration, velocity   one-hot float (1, V)   -> Dense(no bias) = embedding rows
                                                                 (a matmul, so no GATHER: the
                                                                  Edge TPU can run it)
    concat -> LSTMCell_0(h0, c0) -> LSTMCell_1(h1, c1) ...       weights of lstm_<i>.cell
    head_<field>                                                  softmax, as trained

Windowed model: the training model at batch 1 and a fixed window of N int32 ids, last step only.
"""
from __future__ import annotations

from playbach.device.events import FIELDS
from playbach.trainer.model import ModelConfig, build_model


def state_roles(config: ModelConfig) -> list[str]:
    """h0, c0, h1, c1, ... in layer order: the step model's state inputs and outputs."""
    return [f"{kind}{i}" for i in range(len(config.units)) for kind in ("h", "c")]


def step_roles(config: ModelConfig) -> list[str]:
    return list(FIELDS) + state_roles(config)


INT8_CELL_CLIP = 8.0


def build_step_model(config: ModelConfig, trained, for_int8: bool = False, cell_clip: float | None = None):
    """Keras step model with the weights of `trained` (a model from build_model); outputs a dict by role.

    `for_int8` makes the twin that full-integer quantization is calibrated on, two changes that
    each bought pitch top-1 agreement on the default model (0.64 -> 0.94 -> 0.95):
      * each cell state c is clipped to +-cell_clip after every step (the builder passes
        INT8_CELL_CLIP when the float model's |c| goes beyond it): a trained LSTM's c wanders to
        +-100 and more, which at 256 int8 levels leaves a step of ~1 where tanh(c) needs ~0.05;
        past |c| = 8 tanh(c) is 1 to 7 digits anyway (float cost: ~1% agreement). Not clipping
        when |c| stays small matters too: the clip's int8 MIN/MAX widen c's range to the bound;
      * the gates are computed by four matmuls (LSTMCell implementation=1, same math), so each
        gate's pre-activation gets its own int8 scale instead of sharing one.
    """
    import keras
    from keras import layers

    inputs = {name: keras.Input(shape=(vocab,), batch_size=1, dtype="float32", name=name)
              for name, vocab in zip(FIELDS, config.vocab_sizes)}
    for i, units in enumerate(config.units):
        for kind in ("h", "c"):
            inputs[f"{kind}{i}"] = keras.Input(shape=(units,), batch_size=1, dtype="float32", name=f"{kind}{i}")

    embed = {name: layers.Dense(dims, use_bias=False, name=f"embed_{name}")
             for name, dims in zip(FIELDS, config.embed_dims)}
    x = layers.Concatenate(name="concat")([embed[name](inputs[name]) for name in FIELDS])
    outputs, cells = {}, []
    for i, units in enumerate(config.units):
        cell = layers.LSTMCell(units, implementation=1 if for_int8 else 2, name=f"lstm_{i}")
        x, (h, c) = cell(x, [inputs[f"h{i}"], inputs[f"c{i}"]])
        if for_int8 and cell_clip:
            c = layers.Lambda(lambda t: keras.ops.clip(t, -cell_clip, cell_clip), name=f"clip_c{i}")(c)
        outputs[f"h{i}"], outputs[f"c{i}"] = h, c
        cells.append(cell)
    heads = {name: layers.Dense(vocab, activation="softmax", name=f"head_{name}")
             for name, vocab in zip(FIELDS, config.vocab_sizes)}
    for name in FIELDS:
        outputs[name] = heads[name](x)
    model = keras.Model(inputs, outputs, name="playbach_step")

    for name in FIELDS:
        embed[name].set_weights(trained.get_layer(f"embed_{name}").get_weights())
        heads[name].set_weights(trained.get_layer(f"head_{name}").get_weights())
    for i, cell in enumerate(cells):
        cell.set_weights(trained.get_layer(f"lstm_{i}").cell.get_weights())
    return model


def build_windowed_model(config: ModelConfig, trained, batch_size: int | None = 1):
    """The training model at a fixed window N = config.window, last step only, trained weights."""
    model = build_model(config, batch_size=batch_size, seq_len=config.window, return_sequences=False)
    model.set_weights(trained.get_weights())
    return model
