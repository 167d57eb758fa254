"""Would a voice field pay on the JSB benchmark? Count models, no training (issue 11 item 4 (c)).

Today an event knows its pitch but not its voice, and relative pitch reads the interval from the
*previous event*, which inside a chord is another voice. This fits smoothed count models on the
train split and scores the valid and test splits, in nats per event, with and without the voice:

  without  pitch    P(interval from the previous event's pitch | in a chord or not)
           duration P(duration | onset delta)
  with     voice    P(voice | previous event's voice, onset delta)      -- the cost of the new field
           or       P(voice | the voices free at this onset)            -- read from the history
           pitch    P(interval from the same voice's previous pitch | voice)
           duration P(duration | voice, onset delta, same voice's previous duration)

The "with" total scores notes *and* their voices, so it bounds from above what a model that knows
voices would pay for the notes alone: if it is lower, the voice is information the model lacks.

    .venv/bin/python research/jsb_voice_evidence.py --out bench/results/jsb_voice_evidence.json
"""
from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

import numpy as np

from playbach.files import write_text_atomically

ALPHA = 0.1          # add-alpha smoothing of every count model
JSB = "../shared/corpus/jsb-chorales/Jsb16thSeparated.json"


def voiced_events(rows: list[list[int]]) -> list[tuple[int, int, int, int, int]]:
    """(start, pitch, duration, voice, onset delta) in the order notes_to_events gives (start, pitch,
    duration): each voice's run of one pitch is one note, as playbach/jsb.py reads the file."""
    notes = []
    for voice in range(4):
        start, pitch = 0, -1
        for t, row in enumerate([*rows, [-1] * 4]):
            if row[voice] != pitch:
                if pitch != -1:
                    notes.append((start, pitch, t - start, voice))
                start, pitch = t, row[voice]
    notes.sort(key=lambda n: n[:3])
    return [(s, p, d, v, s - (notes[i - 1][0] if i else s)) for i, (s, p, d, v) in enumerate(notes)]


def features(piece: list[tuple[int, int, int, int, int]]) -> list[dict]:
    """Per event, the (context, outcome) pair of every count model above."""
    out, last = [], {}            # last[voice] = (pitch, duration, end) of that voice's previous note
    previous = None
    for start, pitch, duration, voice, delta in piece:
        chord = delta == 0 and previous is not None
        # the voices free at this onset: their previous note ends here (or they have not begun);
        # the history (onsets, durations) tells them, so the runtime could too, with no new field
        free = tuple(v for v in range(4) if v not in last or last[v][2] <= start)
        out.append({
            "pitch_no_voice": ((chord,), pitch - previous[1] if previous else ("first", pitch)),
            "duration_no_voice": ((delta,), duration),
            "voice": ((previous[3] if previous else -1, delta), voice),
            "voice_from_history": ((free,), voice),
            "pitch_voice": ((voice,), pitch - last[voice][0] if voice in last else ("first", pitch)),
            "duration_voice": ((voice, delta, last[voice][1] if voice in last else -1), duration),
        })
        previous, last[voice] = (start, pitch, duration, voice), (pitch, duration, start + duration)
    return out


class CountModel:
    """P(outcome | context) with add-ALPHA smoothing over the outcomes seen in training plus one unseen."""

    def __init__(self, pairs):
        self.counts, self.outcomes = defaultdict(Counter), set()
        for context, outcome in pairs:
            self.counts[context][outcome] += 1
            self.outcomes.add(outcome)

    def nll(self, context, outcome) -> float:
        seen = self.counts.get(context, Counter())
        k = len(self.outcomes) + 1
        return -float(np.log((seen.get(outcome, 0) + ALPHA) / (sum(seen.values()) + ALPHA * k)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=JSB)
    parser.add_argument("--out", default="bench/results/jsb_voice_evidence.json")
    args = parser.parse_args()
    document = json.load(open(args.corpus))
    split = {s: [features(voiced_events(rows)) for rows in document[s]] for s in ("train", "valid", "test")}
    names = list(split["train"][0][0])
    models = {n: CountModel(e[n] for piece in split["train"] for e in piece) for n in names}
    result = {"corpus": args.corpus, "alpha": ALPHA, "unit": "nats per event (one event per note)"}
    for s in ("valid", "test"):
        events = [e for piece in split[s] for e in piece]
        per = {n: sum(models[n].nll(*e[n]) for e in events) / len(events) for n in names}
        per["without_voice"] = per["pitch_no_voice"] + per["duration_no_voice"]
        per["with_voice"] = per["voice"] + per["pitch_voice"] + per["duration_voice"]
        per["with_voice_from_history"] = per["voice_from_history"] + per["pitch_voice"] + per["duration_voice"]
        result[s] = {"events": len(events), **{k: round(v, 4) for k, v in per.items()}}
    write_text_atomically(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
