"""The Keras model: one embedding per field -> stacked LSTM -> one softmax head per field.

Given events 0..t it predicts each field of event t+1 (the heads are independent given the
history). The windowed form below is for training; the converter rebuilds the same weights as
a single-step model with explicit LSTM state (LSTMCells), so every layer here must have a cell
twin: Embedding, LSTM, Dense. Layer names are the contract between the two:

    inputs        onset, pitch, duration, velocity      int token ids, shape (batch, time)
    embed_<field> Embedding(vocab, embed_dims[field])
    lstm_<i>      LSTM(units[i], return_sequences=True), its cell state clipped (trainer/clipped.py)
    head_<field>  Dense(vocab, softmax)                 outputs named like the field

With `relative_pitch` (trainer/relative.py) the pitch also enters as the interval from the
previous event (embed_interval), and the pitch head adds interval logits read from the current
pitch to head_pitch's (head_interval, relative_pitch, softmax_pitch).

With `voices` (playbach/voices.py) context inputs follow the fields -- slot, voice_interval,
voice_pitch, next_slot, next_position (voices 1), then chord_0..3 and next_end (voices 2): all but
voice_pitch are embedded (embed_<name>), and the pitch head adds interval logits read from
voice_pitch (head_voice_interval, relative_voice).

With `duration_given_pitch` the duration head also reads the pitch of the note it gives the length
of (relative.DurationGivenPitch, head_duration): the training form gets that pitch as one more
input, next_pitch (the target's, teacher forcing); the inference forms output the duration
distribution for every pitch, (V, durations), and the sampler reads the row of the pitch it drew.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from playbach.events import FIELDS
from playbach.heads import NEXT_PITCH
from playbach.voices import context_names, context_sizes, input_names

# embedding sizes of the context inputs; voice_pitch is read by the pitch head instead
CONTEXT_DIMS = {"slot": 4, "voice_interval": 16, "next_slot": 4, "next_position": 8,
                "chord_0": 8, "chord_1": 8, "chord_2": 8, "chord_3": 8, "next_end": 8}


@dataclass
class ModelConfig:
    """A model's shape and training hyperparameters. The defaults are `playbach train`'s (its
    flags default to them, trainer/config.py); the shipped model's recipe, recipes/default.toml,
    differs from them in voices, duration_given_pitch and the dropouts, tuned to the four-voice
    chorales (docs/trainer.md, "Why the defaults are not the shipped recipe"). A run.json written
    before a field existed is completed with what that run meant by trainer/runfolder.py, never by
    these defaults."""
    vocab_sizes: tuple[int, int, int, int]
    embed_dims: tuple[int, int, int, int] = (16, 32, 16, 8)
    units: tuple[int, ...] = (256, 256)
    dropout: float = 0.2               # on each LSTM layer's output
    recurrent_dropout: float = 0.25    # on each LSTM's h inside the recurrence (training only)
    window: int = 64          # training window length (events); also the windowed TFLite model's N
    learning_rate: float = 5e-3
    relative_pitch: bool = True        # the interval from the previous note as an input, and a pitch head on it
    pitch_values: tuple[int, ...] = ()  # the codec's pitch vocabulary; relative_pitch needs it
    interval_dims: int = 16
    voices: int = 1                    # voice context inputs (playbach/voices.py): 0 off, 1 on, 2 with chords
    duration_given_pitch: bool = False  # the duration head reads the next note's pitch (needs relative pitch)
    cell_clip: float | None = 3.0       # each LSTM's cell state kept in +-cell_clip (trainer/clipped.py); None: free

    @property
    def input_names(self) -> tuple[str, ...]:
        return FIELDS + context_names(self.voices)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("vocab_sizes", "embed_dims", "units", "pitch_values"):
            if k in known:
                known[k] = tuple(int(v) for v in known[k])
        if "voices" in known:   # a bool in run.json before chords: true is level 1
            known["voices"] = int(known["voices"])
        return cls(**known)


def build_model(cfg: ModelConfig, batch_size: int | None = None, seq_len: int | None = None,
                return_sequences: bool = True, model_name: str = "playbach", input_prefix: str = ""):
    """Windowed model. `batch_size=1, seq_len=N, return_sequences=False` is the TFLite windowed form.
    `input_prefix` names its inputs apart from another model's in one graph (an ensemble's members)."""
    import keras
    from keras import layers

    from playbach.trainer import clipped, relative

    inputs, embedded, pitch = [], [], None
    for name, vocab, dims in zip(FIELDS, cfg.vocab_sizes, cfg.embed_dims):
        x = keras.Input(shape=(seq_len,), batch_size=batch_size, dtype="int32", name=input_prefix + name)
        inputs.append(x)
        embedded.append(layers.Embedding(vocab, dims, name=f"embed_{name}")(x))
    check_inputs(cfg)
    next_pitch = None
    if cfg.duration_given_pitch and return_sequences:   # training: the target's pitch is an input
        x = keras.Input(shape=(seq_len,), batch_size=batch_size, dtype="int32", name=NEXT_PITCH)
        inputs.append(x)
        next_pitch = relative.OneHot(cfg.vocab_sizes[1], name="next_pitch_onehot")(x)
    voice_pitch = None
    if cfg.voices:
        sizes = context_sizes(cfg.vocab_sizes[1])
        for name in context_names(cfg.voices):
            size = sizes[name]
            x = keras.Input(shape=(seq_len,), batch_size=batch_size, dtype="int32", name=input_prefix + name)
            inputs.append(x)
            if name == "voice_pitch":
                voice_pitch = relative.OneHot(size, name="voice_pitch_onehot")(x)
            else:
                embedded.append(layers.Embedding(size, CONTEXT_DIMS[name], name=f"embed_{name}")(x))
    if cfg.relative_pitch:
        previous, pitch = relative.PitchOneHots(cfg.vocab_sizes[1], name="pitch_onehots")(inputs[1])
        embedded.append(relative.interval_input(previous, pitch, cfg.pitch_values, cfg.interval_dims))
        if not return_sequences:  # the windowed form predicts from its last step only
            pitch, voice_pitch = (None if x is None else layers.Reshape((cfg.vocab_sizes[1],), name=f"last_{name}")(
                layers.Cropping1D((seq_len - 1, 0), name=f"crop_{name}")(x)) for name, x in
                (("pitch", pitch), ("voice_pitch", voice_pitch)))
    h = layers.Concatenate(name="concat")(embedded)
    for i, units in enumerate(cfg.units):
        last = i == len(cfg.units) - 1
        h = clipped.lstm(units, cfg.cell_clip, return_sequences or not last, cfg.recurrent_dropout, f"lstm_{i}")(h)
        if cfg.dropout:
            h = layers.Dropout(cfg.dropout, name=f"dropout_{i}")(h)
    outputs = heads(cfg, h, pitch, voice_pitch, next_pitch)
    return keras.Model(inputs, outputs, name=model_name)


def check_inputs(cfg: ModelConfig) -> None:
    """A ValueError for inputs that cannot work together."""
    if cfg.voices and not cfg.relative_pitch:
        raise ValueError("voices needs relative pitch: the pitch head reads intervals from the voice's last pitch")
    if cfg.relative_pitch and len(cfg.pitch_values) != cfg.vocab_sizes[1]:
        raise ValueError(f"relative pitch needs one pitch value per pitch id: {len(cfg.pitch_values)} values "
                         f"for a pitch vocabulary of {cfg.vocab_sizes[1]}")
    if cfg.duration_given_pitch and not cfg.relative_pitch:
        raise ValueError("duration_given_pitch needs relative pitch: the head reads the interval to the next pitch")


def heads(cfg: ModelConfig, h, pitch=None, voice_pitch=None, next_pitch=None) -> dict:
    """One softmax head per field on the LSTM output h; with relative pitch the pitch head also
    reads the current pitch one-hot (and with voices the voice's); with duration_given_pitch the
    duration head reads `next_pitch`, or gives a row per pitch when it is None. The training and
    the step model both build theirs here."""
    from keras import layers

    from playbach.trainer import relative

    out = {}
    for name, vocab in zip(FIELDS, cfg.vocab_sizes):
        if name == "pitch" and cfg.relative_pitch:
            out[name] = relative.pitch_head(h, pitch, cfg.pitch_values, voice_pitch)
        elif name == "duration" and cfg.duration_given_pitch:
            reference = pitch if voice_pitch is None else voice_pitch
            out[name] = relative.DurationGivenPitch(cfg.pitch_values, vocab, name="head_duration")(
                h, reference, next_pitch)
        else:
            out[name] = layers.Dense(vocab, activation="softmax", name=f"head_{name}")(h)
    return out


def keras_inputs(rows: np.ndarray, following: np.ndarray | None = None) -> dict:
    """(batch, T, w) id rows -> the Keras model's inputs by name. `following` (batch, T): the pitch
    id of the note after each row, for a model whose duration head reads it (playbach/heads.py)."""
    x = {name: rows[..., j] for j, name in enumerate(input_names(rows.shape[-1]))}
    if following is not None:
        x[NEXT_PITCH] = following
    return x


def load_keras_model(path, compile: bool = False):
    """A saved model.keras / checkpoint.keras, with the relative-pitch layers it may hold."""
    import keras

    from playbach.trainer import clipped, relative

    return keras.models.load_model(path, compile=compile,
                                   custom_objects=relative.CUSTOM_OBJECTS | clipped.CUSTOM_OBJECTS)


def compile_model(model, cfg: ModelConfig) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0),
        loss={f: "sparse_categorical_crossentropy" for f in FIELDS},
        metrics={f: ["sparse_categorical_accuracy"] for f in FIELDS},
    )
