"""The JSB Chorales benchmark file (Jsb16thSeparated.json) as pieces of events.

The file is {"train": [...], "valid": [...], "test": [...]}: each chorale a list of 16th-note
rows of four MIDI pitches (soprano, alto, tenor, bass; -1 = that voice is silent). Held and
repeated notes are not told apart there, so one voice's run of equal pitches is one note. Every
voice's note is kept as its own event -- unison doublings and a voice moving onto a pitch another
voice holds included, which `merge_overlaps` would drop or cut for other corpora -- because the
published figures score every voice's notes; a piece's total NLL then covers exactly the
notes the benchmark counts (17,525 on test).

Needs numpy only: `playbach evaluate BUNDLE` reads it on a machine without TensorFlow.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from playbach.errors import UserError
from playbach.events import Note, notes_to_events

GRID = 4                    # ticks per quarter: one tick per 16th
SPLITS = ("train", "valid", "test")
SILENT = -1
VELOCITY = 64               # the format has none; 64 is what the music21 chorales get too


@dataclass
class JsbPiece:
    name: str               # "<split>/<index in the split, 3 digits>", e.g. "test/007"
    events: np.ndarray      # (n, 4) field values on GRID
    steps16: int            # rows in the file: the piece's length in 16th steps


def looks_like_jsb(path: str | Path) -> bool:
    """Whether a --corpus argument names a JSON file (read as the JSB format) rather than a folder."""
    return Path(path).suffix.lower() == ".json" and not Path(path).is_dir()


def voice_notes(rows: list[list[int]]) -> list[Note]:
    """Each voice's runs of one pitch as notes (start and duration in 16ths); silence ends a run."""
    notes = []
    for voice in range(4):
        start, pitch = 0, SILENT
        for t, row in enumerate([*rows, [SILENT] * 4]):
            if row[voice] != pitch:
                if pitch != SILENT:
                    notes.append(Note(start, pitch, t - start, VELOCITY))
                start, pitch = t, row[voice]
    return notes


def _check_piece(path: Path, name: str, rows: object) -> list[list[int]]:
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{path}: piece {name} is not a non-empty list of 16th-note rows")
    for t, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 4
                and all(isinstance(p, int) and not isinstance(p, bool) and SILENT <= p <= 127 for p in row)):
            raise UserError(f"{path}: piece {name}, row {t} is {row!r}, not four MIDI pitches "
                            f"(-1 = silent)")
    if all(p == SILENT for row in rows for p in row):
        raise UserError(f"{path}: piece {name} has no notes (every voice silent)")
    return rows


def read_rows(path: str | Path, splits: tuple[str, ...] = SPLITS) -> dict[str, list[tuple[str, list[list[int]]]]]:
    """Each wanted split's pieces as (name, rows), in the file's order. UserError naming the file
    (and the piece) for anything that is not this format or a split the file lacks."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: not a JSB chorales JSON file ({e})") from e
    if not isinstance(document, dict) or not all(isinstance(v, list) for v in document.values()):
        raise UserError(f"{path}: not a JSB chorales file: expected an object of splits "
                        f'{{"train": [...], "valid": [...], "test": [...]}} of pieces')
    lacking = [s for s in splits if s not in document]
    if lacking:
        raise UserError(f"{path}: no split {', '.join(map(repr, lacking))} in this file "
                        f"(it has {', '.join(map(repr, document)) or 'none'})")
    out = {}
    for split in splits:
        names = [f"{split}/{i:03d}" for i in range(len(document[split]))]
        out[split] = [(name, _check_piece(path, name, rows)) for name, rows in zip(names, document[split])]
        if not out[split]:
            raise UserError(f"{path}: split {split!r} has no pieces")
    return out


def read_jsb(path: str | Path, splits: tuple[str, ...] = SPLITS) -> dict[str, list[JsbPiece]]:
    """The pieces of each wanted split as events (read_rows says what is refused)."""
    return {split: [JsbPiece(name, notes_to_events(voice_notes(rows)), len(rows)) for name, rows in pieces]
            for split, pieces in read_rows(path, splits).items()}


def steps16(events: np.ndarray, ticks_per_quarter: int) -> float:
    """A piece's length in 16th steps from its events: where its last note ends."""
    events = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    starts = np.cumsum(events[:, 0])
    return float((starts + events[:, 2]).max()) * 4 / ticks_per_quarter if len(events) else 0.0
