"""Training windows: N events in, the same N events shifted by one out, per field.

Windows never cross pieces. They step by `stride` events; the last window of a piece is
aligned to its end so every event is a target at least once.
"""
from __future__ import annotations

import numpy as np

from playbach.events import FIELDS


def piece_windows(ids: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(n, 4) token ids -> (k, window + 1, 4) windows; k = 0 if the piece is too short."""
    n = len(ids)
    if n < window + 1:
        return np.zeros((0, window + 1, 4), dtype=np.int32)
    starts = list(range(0, n - window, stride))
    if starts[-1] != n - window - 1:
        starts.append(n - window - 1)
    return np.stack([ids[s:s + window + 1] for s in starts]).astype(np.int32)


def make_windows(pieces: list[np.ndarray], window: int, stride: int) -> np.ndarray:
    """All windows of all pieces (token ids), stacked: (k, window + 1, 4)."""
    parts = [piece_windows(p, window, stride) for p in pieces]
    return np.concatenate(parts) if parts else np.zeros((0, window + 1, 4), dtype=np.int32)


def to_inputs_targets(windows: np.ndarray) -> tuple[dict, dict]:
    """Keras dicts keyed by field: inputs events[t:t+N], targets events[t+1:t+N+1]."""
    x = {f: windows[:, :-1, j] for j, f in enumerate(FIELDS)}
    y = {f: windows[:, 1:, j] for j, f in enumerate(FIELDS)}
    return x, y


def shift_pitch(windows: np.ndarray, rng: np.random.Generator, semitones: int, pitch_size: int) -> np.ndarray:
    """Each window moved by its own random -semitones..+semitones, kept inside the pitch vocabulary.

    Pitch ids are consecutive semitones once the codec has a transposition margin, so moving a
    pitch by s semitones moves its id by s."""
    pitch = windows[:, :, 1]
    low = np.maximum(-semitones, -pitch.min(axis=1))
    high = np.minimum(semitones, pitch_size - 1 - pitch.max(axis=1))
    shift = np.floor(rng.random(len(windows)) * (high - low + 1)).astype(np.int64) + low
    out = windows.copy()
    out[:, :, 1] += shift[:, None].astype(out.dtype)
    return out


def random_transpose_batches(windows: np.ndarray, batch: int, semitones: int, pitch_size: int, seed: int):
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
            return to_inputs_targets(shift_pitch(chosen, self.rng, semitones, pitch_size))

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(windows))

    return Batches()
