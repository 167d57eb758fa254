"""A Bach corpus: files -> raw notes (parsed in parallel, cached) -> events on one tick grid.

    files       music21's bundled Bach chorales (no download), or a folder of
                .mid/.midi (read with events.read_midi: exact ticks, fast) and
                .mxl/.musicxml/.xml/.krn (music21: all parts flattened, ties joined)
    raw notes   (start, pitch, duration, velocity), times in quarter notes; cached per file
                under $PLAYBACH_CACHE (default ~/.cache/playbach/notes) by content sha256
    grid        the coarsest ticks-per-quarter that rounds at most `max_rounded_share` of notes
    events      quantize_notes -> merge_overlaps -> notes_to_events, one (n, 4) array per piece

Unreadable, corrupt or empty files are skipped with a warning and listed in `skipped_files`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from playbach.bundle import file_sha256
from playbach.events import GRIDS, merge_overlaps, notes_to_events, quantize_notes
from playbach.fingerprint import melody_fingerprint, shared
from playbach.midifile import read_midi
from playbach.errors import UserError
from playbach.files import write_text_atomically
from playbach.jsb import GRID as JSB_GRID, SPLITS as JSB_SPLITS, read_jsb
from playbach.trainer.split import Split

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
SCORE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn")
DEFAULT_CORPUS = "music21:bach"
CACHE_VERSION = 1  # bump when the parsers change what they return
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

RawNote = tuple[float, int, float, int]  # start, pitch, duration (quarters), velocity


@dataclass
class Piece:
    name: str
    events: np.ndarray  # (n, 4) field values


@dataclass
class Corpus:
    source: str                       # the folder, or 'music21:bach'
    pieces: list[Piece]
    grid: int                         # ticks per quarter
    notes: int                        # notes read (before merging overlaps)
    rounded: int                      # notes moved by the grid
    merged: int                       # notes dropped or cut by merge_overlaps
    skipped_files: list[str] = field(default_factory=list)
    parse_s: float = 0.0
    cached_files: int = 0             # files whose notes came from the cache
    sha256: str | None = None         # of the JSB file (the benchmark's exact data), None for folders
    # JSB only: train pieces left out because a valid/test piece has their note content, and train
    # pieces kept that share only their top line with one (another harmonisation of the tune)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    melody_shared: dict[str, list[str]] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return sum(len(p.events) for p in self.pieces)

    def by_name(self) -> dict[str, np.ndarray]:
        return {p.name: p.events for p in self.pieces}


# --- finding and parsing files ---------------------------------------------------------------

def corpus_files(directory: str | None) -> tuple[str, list[Path]]:
    """(source label, sorted music files). None means music21's bundled Bach chorales."""
    if directory is None:
        from music21 import corpus as m21corpus

        files = [Path(p) for p in m21corpus.getComposer("bach")]
        return DEFAULT_CORPUS, sorted(p for p in files if p.suffix.lower() in SCORE_SUFFIXES)
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"corpus folder {root} does not exist or is not a folder")
    suffixes = MIDI_SUFFIXES + SCORE_SUFFIXES
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    return str(root), files


def parse_score(path: Path) -> list[RawNote]:
    """All notes of all parts of a MusicXML/Humdrum score; ties joined, grace notes dropped."""
    from music21 import converter

    score = converter.parse(str(path)).stripTies()
    notes = []
    for n in score.flatten().notes:  # notes and chords of every part, absolute offsets
        length = float(n.quarterLength)
        if length <= 0:
            continue
        velocity = n.volume.velocity or 64
        for p in n.pitches:
            notes.append((float(n.offset), int(p.midi), length, int(velocity)))
    return sorted(notes)


def parse_file(path: Path) -> list[RawNote]:
    if path.suffix.lower() in MIDI_SUFFIXES:
        return read_midi(path)
    return parse_score(path)


def cache_dir() -> Path:
    base = os.environ.get("PLAYBACH_CACHE")
    return Path(base) / "notes" if base else Path.home() / ".cache" / "playbach" / "notes"


def _parse_cached(path: Path, cache: Path) -> tuple[str, list[RawNote] | None, str, bool]:
    """(path, notes or None, error message, came from cache). Runs in a worker process."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        return str(path), None, f"unreadable ({e})", False
    cached = cache / f"{digest}-v{CACHE_VERSION}.json"
    if cached.exists():
        try:
            return str(path), [tuple(n) for n in json.loads(cached.read_text())], "", True
        except (OSError, ValueError):
            pass  # a damaged cache entry: parse again
    try:
        notes = parse_file(path)
    except Exception as e:  # music21 and mido raise many kinds on bad files
        return str(path), None, f"{type(e).__name__}: {e}", False
    cache.mkdir(parents=True, exist_ok=True)
    write_text_atomically(cached, json.dumps(notes))
    return str(path), notes, "", False


def parse_all(files: list[Path], workers: int = 2, progress: bool = True) -> tuple[dict, list[str], int]:
    """Parse files in parallel with a progress bar: ({path: notes}, skipped files, cache hits)."""
    from tqdm import tqdm

    cache = cache_dir()
    parsed, skipped, hits = {}, [], 0
    bar = tqdm(total=len(files), desc="parsing", unit="file", disable=not progress)
    if workers > 1 and len(files) >= 8:
        # forkserver: workers start clean, never a fork of a process that has TensorFlow threads
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))
        results = pool.map(_parse_cached, files, [cache] * len(files), chunksize=4)
    else:  # a handful of files: not worth starting processes
        pool, results = None, (_parse_cached(f, cache) for f in files)
    try:
        for path, notes, error, hit in results:
            bar.update()
            hits += hit
            if notes is None or not notes:
                reason = error or "no notes"
                log.warning("skipping %s: %s", path, reason)
                skipped.append(path)
                continue
            parsed[path] = notes
    finally:
        if pool is not None:
            pool.shutdown()
        bar.close()
    return parsed, skipped, hits


# --- grid and events ---------------------------------------------------------------------------

def rounded_on(raw: list[RawNote], grid: int) -> int:
    """How many notes (start or duration) do not lie on `grid` ticks per quarter."""
    a = np.asarray([(s, d) for s, _, d, _ in raw], dtype=np.float64).reshape(-1, 2) * grid
    return int(np.any(np.abs(a - np.round(a)) > 1e-6, axis=1).sum())


def pick_grid(raw: list[RawNote], max_rounded_share: float = 0.002) -> int:
    """The coarsest grid that rounds at most `max_rounded_share` of the notes (else the finest).

    A coarser grid means smaller onset/duration vocabularies; the share keeps a handful of
    ornaments and sloppy MIDI ticks from forcing a much finer grid on the whole corpus."""
    for grid in GRIDS:
        if rounded_on(raw, grid) <= max_rounded_share * len(raw):
            return grid
    return GRIDS[-1]


def piece_name(path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    return rel.with_suffix("").as_posix()


def load_corpus(directory: str | None = None, workers: int = 2, progress: bool = True,
                grid: int | None = None) -> Corpus:
    """Parse a folder (or the bundled chorales) into pieces of events; raises UserError if none."""
    started = time.perf_counter()
    source, files = corpus_files(directory)
    parsed, skipped, hits = parse_all(files, workers, progress)
    if not parsed:
        raise UserError(f"no usable music in {source}: 0 files parsed, {len(skipped)} skipped "
                        f"(of {len(files)} .mid/.midi/.mxl/.musicxml/.xml/.krn files)")
    every = [n for notes in parsed.values() for n in notes]
    grid = grid or pick_grid(every)
    root = Path(directory) if directory is not None else None
    pieces, rounded, merged = [], 0, 0
    for path, raw in parsed.items():
        notes, r = quantize_notes(raw, grid)
        notes, m = merge_overlaps(notes)
        rounded, merged = rounded + r, merged + m
        pieces.append(Piece(piece_name(Path(path), root), notes_to_events(notes)))
    pieces.sort(key=lambda p: p.name)
    return Corpus(source, pieces, grid, len(every), rounded, merged, skipped,
                  time.perf_counter() - started, hits)


def jsb_corpus(path: str) -> tuple[Corpus, Split]:
    """The JSB benchmark file (playbach/jsb.py) and its own split, as given: train / valid / test.
    Nothing is merged (every voice's note is an event) and nothing else is mixed in -- except that
    a train piece whose note content (fingerprint.content_fingerprint: transposition and names
    ignored) is a valid or test piece's is left out, so no figure is measured on music the model
    trained on (`Corpus.dropped`; the benchmark file has none today)."""
    started = time.perf_counter()
    sides = read_jsb(path)
    held = {p.name: p.events for side in JSB_SPLITS[1:] for p in sides[side]}
    dropped = shared({p.name: p.events for p in sides["train"]}, held)
    if dropped:
        log.warning("%s: %d train piece(s) left out, their notes are a valid/test piece's: %s", path,
                    len(dropped), "; ".join(f"{k} = {' = '.join(v)}" for k, v in dropped.items()))
    sides["train"] = [p for p in sides["train"] if p.name not in dropped]
    if not sides["train"]:
        names = ", ".join(list(dropped)[:3]) + (", ..." if len(dropped) > 3 else "")
        raise UserError(f"{path}: every train piece ({names}) is also a valid or test piece (by note content)")
    pieces = [Piece(p.name, p.events) for side in JSB_SPLITS for p in sides[side]]
    corpus = Corpus(str(path), pieces, JSB_GRID, sum(len(p.events) for p in pieces), 0, 0,
                    parse_s=time.perf_counter() - started, sha256=file_sha256(Path(path)), dropped=dropped,
                    melody_shared=shared({p.name: p.events for p in sides["train"]}, held, melody_fingerprint))
    if corpus.melody_shared:   # kept: another harmonisation of a held-out tune is another chorale
        log.info("%s: %d train piece(s) share their top line with a valid/test piece (kept): %s", path,
                 len(corpus.melody_shared),
                 "; ".join(f"{k} ~ {' ~ '.join(v)}" for k, v in corpus.melody_shared.items()))
    names = {side: [p.name for p in sides[side]] for side in JSB_SPLITS}
    return corpus, Split(train=names["train"], val=names["valid"], test=names["test"])


def check_windows(corpus: Corpus, window: int) -> None:
    """Every piece holds one window (window + 1 events), else a UserError naming file and piece:
    for the benchmark, where a piece too short to train on would silently drop out of training."""
    for p in corpus.pieces:
        if len(p.events) < window + 1:
            raise UserError(f"{corpus.source}: piece {p.name} has {len(p.events)} events, fewer than one "
                            f"window ({window} + 1); choose a smaller --window")


# --- token counts for the report ---------------------------------------------------------------

def pitch_name(midi: int) -> str:
    return f"{PITCH_NAMES[midi % 12]}{midi // 12 - 1}"


def series_tokens(events: np.ndarray) -> list[str]:
    """The Play Bach series' tokens: the notes of each onset as one token, e.g. 'A2.F#3' or 'A2'."""
    tokens, chord = [], []
    for onset, pitch, _, _ in np.asarray(events).tolist():
        if onset and chord:
            tokens.append(".".join(pitch_name(p) for p in sorted(chord)))
            chord = []
        chord.append(pitch)
    if chord:
        tokens.append(".".join(pitch_name(p) for p in sorted(chord)))
    return tokens


def token_counts(corpus: Corpus) -> dict:
    """Distinct series-style note/chord tokens and distinct pitches over the whole corpus."""
    series, pitches = set(), set()
    for p in corpus.pieces:
        series.update(series_tokens(p.events))
        pitches.update(np.unique(p.events[:, 1]).tolist())
    return {"series_tokens": len(series), "unique_pitch_tokens": len(pitches)}
