"""Training windows: N events in, the same N events shifted by one out, per field.

Windows never cross pieces. They step by `stride` events; the last window of a piece is
aligned to its end so every event is a target at least once.
"""
from __future__ import annotations

import numpy as np

from playbach.device.events import FIELDS


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
