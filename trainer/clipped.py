"""An LSTM whose cell state is clipped to +-cell_clip after every step, in training as in play.

Why: a full-int8 model (what the Edge TPU runs) gives each tensor 256 levels. An LSTM trained
freely lets c wander to +-100 and beyond, so c's int8 step is about 1 where tanh(c) needs about
0.05, and the int8 model's pitch choices drift from the float model's. Clipping c only in the
converter (convert/int8.py does that for models trained without a clip) changes the model the
float weights were trained for. Trained with the clip in place, the network learns to keep its
memory inside the range, the float and int8 models compute the same function, and c's int8 step
is 2 * cell_clip / 256.

The clip acts on the state carried to the next step; h of this step is o * tanh(c) of the
unclipped c, exactly as the step model computes it (trainer/step.py), so the trained, windowed
and step forms agree to float precision.
"""
from __future__ import annotations

from keras import layers, ops


class ClippedLSTMCell(layers.LSTMCell):
    """keras.layers.LSTMCell whose carried cell state is clipped to +-cell_clip."""

    def __init__(self, units: int, cell_clip: float, **kwargs):
        super().__init__(units, **kwargs)
        self.cell_clip = float(cell_clip)

    def call(self, inputs, states, training=False):
        h, (h, c) = super().call(inputs, states, training=training)
        return h, [h, ops.clip(c, -self.cell_clip, self.cell_clip)]

    def get_config(self) -> dict:
        return super().get_config() | {"cell_clip": self.cell_clip}


def lstm(units: int, cell_clip: float | None, return_sequences: bool, recurrent_dropout: float, name: str):
    """The training model's LSTM layer `name`: Keras's own without a clip (the models trained before
    the clip load unchanged), else an RNN over ClippedLSTMCell. Either way its weights are `.cell`'s."""
    if cell_clip is None:
        return layers.LSTM(units, return_sequences=return_sequences, dropout=0.0,
                           recurrent_dropout=recurrent_dropout, name=name)
    cell = ClippedLSTMCell(units, cell_clip, recurrent_dropout=recurrent_dropout, name=f"{name}_cell")
    return layers.RNN(cell, return_sequences=return_sequences, name=name)


CUSTOM_OBJECTS = {"ClippedLSTMCell": ClippedLSTMCell}
