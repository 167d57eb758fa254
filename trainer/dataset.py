"""Training windows: N events in, the same N events shifted by one out, per field.

Windows never cross pieces. They step by `stride` events; the last window of a piece is
aligned to its end so every event is a target at least once. A row is an event's four token ids,
then its voice context ids when the model has voices (playbach/voices.py); targets are the four.
"""
from __future__ import annotations

import numpy as np

from playbach.events import FIELDS, Codec
from playbach.trainer.model import keras_inputs
from playbach.voices import CONTEXT, SLOTS, context_names, with_context

# the context columns that hold pitch ids, moved with the pitch by transposition
VOICE_PITCH = len(FIELDS) + CONTEXT.index("voice_pitch")
CHORD = [len(FIELDS) + CONTEXT.index(f"chord_{v}") for v in range(SLOTS)]   # or "silent": the vocabulary's size


def model_rows(codec: Codec, values: np.ndarray, voices: int) -> np.ndarray:
    """A piece's field values -> the model's id rows: token ids, and the voice context it reads."""
    return rows_of_ids(codec, codec.encode(values), voices)


def rows_of_ids(codec: Codec, ids: np.ndarray, voices: int) -> np.ndarray:
    """A piece's token ids -> the model's id rows (the ids, then the voice context it reads)."""
    return with_context(codec, ids, len(context_names(voices))) if voices else ids


def piece_windows(ids: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(n, w) id rows -> (k, window + 1, w) windows; k = 0 if the piece is too short."""
    n = len(ids)
    if n < window + 1:
        return np.zeros((0, window + 1, ids.shape[1]), dtype=np.int32)
    starts = list(range(0, n - window, stride))
    if starts[-1] != n - window - 1:
        starts.append(n - window - 1)
    return np.stack([ids[s:s + window + 1] for s in starts]).astype(np.int32)


def make_windows(pieces: list[np.ndarray], window: int, stride: int) -> np.ndarray:
    """All windows of all pieces (id rows), stacked: (k, window + 1, w)."""
    parts = [piece_windows(p, window, stride) for p in pieces]
    return np.concatenate(parts) if parts else np.zeros((0, window + 1, len(FIELDS)), dtype=np.int32)


def to_inputs_targets(windows: np.ndarray, next_pitch: bool = False) -> tuple[dict, dict]:
    """Keras dicts keyed by input: inputs rows[t:t+N] (and with `next_pitch` the pitch of
    rows[t+1:t+N+1]), targets the fields of rows[t+1:t+N+1]."""
    x = keras_inputs(windows[:, :-1], windows[:, 1:, 1] if next_pitch else None)
    y = {f: windows[:, 1:, j] for j, f in enumerate(FIELDS)}
    return x, y


def shift_pitch(windows: np.ndarray, rng: np.random.Generator, semitones: int, pitch_size: int) -> np.ndarray:
    """Each window moved by its own random -semitones..+semitones, kept inside the pitch vocabulary.

    Pitch ids are consecutive semitones once the codec has a transposition margin, so moving a
    pitch by s semitones moves its id by s; the voice context's pitch moves with it (kept inside
    the vocabulary: it may be a pitch from before the window)."""
    pitch = windows[:, :, 1]
    low = np.maximum(-semitones, -pitch.min(axis=1))
    high = np.minimum(semitones, pitch_size - 1 - pitch.max(axis=1))
    shift = np.floor(rng.random(len(windows)) * (high - low + 1)).astype(np.int64) + low
    out = windows.copy()
    out[:, :, 1] += shift[:, None].astype(out.dtype)
    if out.shape[2] > VOICE_PITCH:
        out[:, :, VOICE_PITCH] = np.clip(out[:, :, VOICE_PITCH] + shift[:, None], 0, pitch_size - 1)
    if out.shape[2] > CHORD[-1]:      # a sounding pitch moves too; "silent" (pitch_size) stays
        chord = out[:, :, CHORD]
        moved = np.clip(chord + shift[:, None, None], 0, pitch_size - 1)
        out[:, :, CHORD] = np.where(chord == pitch_size, chord, moved)
    return out


def random_transpose_batches(windows: np.ndarray, batch: int, semitones: int, pitch_size: int, seed: int,
                             next_pitch: bool = False):
    """A Keras PyDataset: shuffled batches, every window in a fresh random key each epoch (one
    copy of each piece per epoch, so rhythm is not seen 2N+1 times as with transposed copies)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(windows))

        def __len__(self) -> int:
            return -(-len(windows) // batch)

        def __getitem__(self, i):
            chosen = windows[self.order[i * batch:(i + 1) * batch]]
            return to_inputs_targets(shift_pitch(chosen, self.rng, semitones, pitch_size), next_pitch)

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(windows))

    return Batches()
