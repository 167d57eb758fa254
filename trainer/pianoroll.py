"""A piano-roll PNG of a MIDI file or of notes: one bar per note, time across, pitch up.

    python -m playbach.trainer.pianoroll take.mid take.png
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from playbach.events import Note
from playbach.midifile import read_midi


def save_pianoroll(notes_or_midi_path: Sequence[Note] | str | Path, png_path: str | Path,
                   ticks_per_quarter: int = 1, title: str | None = None) -> None:
    """Notes (ticks of `ticks_per_quarter`) or a MIDI file's path -> a piano-roll PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    if isinstance(notes_or_midi_path, (str, Path)):
        raw = read_midi(notes_or_midi_path)  # quarters already
        bars = [(s, p, d, v) for s, p, d, v in raw]
        title = title or Path(notes_or_midi_path).name
    else:
        q = float(ticks_per_quarter)
        bars = [(n.start / q, n.pitch, n.duration / q, n.velocity) for n in notes_or_midi_path]
    length = max((s + d for s, _, d, _ in bars), default=1.0)
    fig, ax = plt.subplots(figsize=(min(40, max(8, length / 8)), 4.5))
    polys = [[(s, p - 0.4), (s + d, p - 0.4), (s + d, p + 0.4), (s, p + 0.4)] for s, p, d, _ in bars]
    shade = [plt.cm.viridis(0.25 + 0.7 * v / 127) for *_, v in bars]
    ax.add_collection(PolyCollection(polys, facecolors=shade, edgecolors="none"))
    pitches = [p for _, p, _, _ in bars] or [60]
    ax.set_xlim(0, length)
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlabel("quarter notes")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title or f"{len(bars)} notes")
    ax.grid(alpha=0.25)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m playbach.trainer.pianoroll IN.mid OUT.png")
    save_pianoroll(sys.argv[1], sys.argv[2])
