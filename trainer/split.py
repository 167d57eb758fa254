"""Whole pieces to train / validation / test, and transposition of training pieces.

A piece is never cut: every window of events comes from one piece, so no piece is on two
sides. `holdout` (a glob on piece names, e.g. '*-3cou*') picks the test pieces; otherwise a
seeded shuffle does. Transposition copies the training pieces only.
"""
from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass

import numpy as np

from playbach.errors import UserError


@dataclass
class Split:
    train: list[str]
    val: list[str]
    test: list[str]


def split_pieces(names: list[str], seed: int = 0, holdout: str | None = None,
                 val_share: float = 0.1, test_share: float = 0.1) -> Split:
    """Seeded split of whole pieces; at least one piece on each side."""
    names = sorted(set(names))
    if len(names) < 3:
        raise UserError(f"need at least 3 pieces for train/validation/test, the corpus has {len(names)}")
    rng = random.Random(seed)
    if holdout:
        test = [n for n in names if fnmatch.fnmatch(n, holdout)]
        if not test:
            raise UserError(f"--holdout {holdout!r} matches none of the {len(names)} pieces "
                            f"(e.g. {names[0]!r})")
        rest = [n for n in names if n not in test]
        if len(rest) < 2:
            raise UserError(f"--holdout {holdout!r} leaves {len(rest)} piece(s) for train and validation")
    else:
        shuffled = names[:]
        rng.shuffle(shuffled)
        n_test = max(1, round(test_share * len(names)))
        test, rest = sorted(shuffled[:n_test]), shuffled[n_test:]
    rest = sorted(rest)
    rng.shuffle(rest)
    n_val = min(len(rest) - 1, max(1, round(val_share * len(names))))
    return Split(train=sorted(rest[n_val:]), val=sorted(rest[:n_val]), test=sorted(test))


def transpose(events: np.ndarray, semitones: int) -> np.ndarray | None:
    """The piece moved by `semitones`, or None if a pitch would leave MIDI's 0..127."""
    out = np.array(events, copy=True)
    out[:, 1] += semitones
    if out[:, 1].min() < 0 or out[:, 1].max() > 127:
        return None
    return out


def augment(pieces: list[np.ndarray], semitones: int) -> list[np.ndarray]:
    """Each training piece at every transposition in -semitones..+semitones (0 included)."""
    out = []
    for events in pieces:
        for s in range(-semitones, semitones + 1):
            moved = transpose(events, s)
            if moved is not None:
                out.append(moved)
    return out
