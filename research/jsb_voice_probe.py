"""What a voice-aware model would reach on the JSB benchmark: a Keras-only probe (issue 11 item 4 (c)).

Not the pipeline: nothing here is converted or played. It asks whether the next step -- telling
each event its voice -- is worth the pipeline change, with no new event field at all: on this
data the voice of an event can be read from the history (onsets and durations), as the runtime
could, by the slot rule of playbach/voices.py.

Given that, the model (today's, trained as `playbach train` trains it) gets two more inputs per
event -- its slot, and the interval from that slot's previous pitch -- and its pitch head a third
logit term: interval logits read from the previous pitch of the slot the *next* event will take
(the lowest free slot now, or else the first slot whose note ends), beside today's read from this
event's pitch. `--beat` adds two more read the same way: the slot the next event will take and
the 16th of the bar it will start on (counted from the piece's first note). Measured the way `playbach evaluate` measures (whole pieces, state carried, the
first event uniform), so the figure sits beside bench/results/jsb_*.json.

    nice -n 19 .venv/bin/python research/jsb_voice_probe.py --out /tmp/voice.json
    nice -n 19 .venv/bin/python research/jsb_voice_probe.py --no-voice --out /tmp/control.json
    (the control: the same script without the three additions; bench/results/jsb_voice_probe.json
    holds both)
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from playbach.events import FIELDS, Codec
from playbach.files import write_text_atomically
from playbach.jsb import read_jsb
from playbach.voices import NO_INTERVAL, SLOTS, VoiceTracker
from playbach.voices import features as voice_features

JSB = "../shared/corpus/jsb-chorales/Jsb16thSeparated.json"
BAR = 16                                  # 16ths in a 4/4 bar
BEAT_INPUTS = ("next_slot", "next_position")


def encode(codec: Codec, events: np.ndarray, voice: bool, beat: bool = False) -> np.ndarray:
    """(n, 4 + 3) ids: the codec's four, slot, interval id, the reference pitch id (this event's
    own pitch id where the next slot has none)."""
    ids = codec.encode(events)
    if not voice:
        return ids
    f = voice_features(events)
    if beat:   # the next event's slot and its 16th within a 4/4 bar (from the piece's first note)
        tracker = VoiceTracker()
        nxt = []
        for o, p, d, _ in np.asarray(events, dtype=np.int64).tolist():
            tracker.feed(o, p, d)
            nxt.append((tracker.next_slot, tracker.next_start % BAR))
        f = np.concatenate([f, np.asarray(nxt, dtype=np.int64)], axis=1)
    pitches = np.asarray(codec.vocab["pitch"])
    ref = np.where(f[:, 2] >= 0, np.searchsorted(pitches, np.clip(f[:, 2], pitches[0], pitches[-1])), ids[:, 1])
    return np.concatenate([ids, f[:, :2], ref[:, None], f[:, 3:]], axis=1).astype(np.int32)


def build(cfg, voice: bool, beat: bool = False):
    import keras
    from keras import layers

    from playbach.trainer import relative

    inputs = [keras.Input(shape=(None,), dtype="int32", name=n) for n in FIELDS]
    embedded = [layers.Embedding(v, d)(x) for x, v, d in zip(inputs, cfg.vocab_sizes, cfg.embed_dims)]
    previous, pitch = relative.PitchOneHots(cfg.vocab_sizes[1])(inputs[1])
    embedded.append(relative.interval_input(previous, pitch, cfg.pitch_values, cfg.interval_dims))
    if voice:
        extra = [keras.Input(shape=(None,), dtype="int32", name=n) for n in ("slot", "voice_interval", "ref")]
        inputs += extra
        embedded += [layers.Embedding(SLOTS, 4)(extra[0]), layers.Embedding(NO_INTERVAL + 1, 16)(extra[1])]
    if beat:
        more = [keras.Input(shape=(None,), dtype="int32", name=n) for n in BEAT_INPUTS]
        inputs += more
        embedded += [layers.Embedding(SLOTS, 4)(more[0]), layers.Embedding(BAR, 8)(more[1])]
    h = layers.Concatenate()(embedded)
    for units in cfg.units:
        h = layers.Dropout(cfg.dropout)(layers.LSTM(units, return_sequences=True,
                                                    recurrent_dropout=cfg.recurrent_dropout)(h))
    logits = layers.Add()([layers.Dense(cfg.vocab_sizes[1])(h), relative.RelativeLogits(cfg.pitch_values)(
        layers.Dense(relative.NUM_INTERVALS)(h), pitch)])
    if voice:   # the same interval logits idea, read from the next event's voice's last pitch
        ref = layers.Lambda(lambda x: keras.ops.one_hot(x, cfg.vocab_sizes[1]))(extra[-1])
        logits = layers.Add()([logits, relative.RelativeLogits(cfg.pitch_values)(
            layers.Dense(relative.NUM_INTERVALS)(h), ref)])
    outputs = {n: layers.Activation("softmax", name=f"out_{n}")(logits) if n == "pitch"
               else layers.Dense(v, activation="softmax", name=f"out_{n}")(h) for n, v in zip(FIELDS, cfg.vocab_sizes)}
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0),
                  loss={n: "sparse_categorical_crossentropy" for n in FIELDS})
    return model


def split_xy(windows: np.ndarray, names: list[str]) -> tuple[dict, dict]:
    x = {n: windows[:, :-1, j] for j, n in enumerate(names)}
    y = {n: windows[:, 1:, j] for j, n in enumerate(FIELDS)}
    return x, y


def per_step16(model, codec: Codec, pieces, names: list[str], voice: bool, beat: bool) -> dict:
    """Total NLL of every head over whole pieces (state carried from the first event, which is
    scored uniform as `playbach evaluate` does) / their 16th steps."""
    total, first = 0.0, sum(math.log(n) for n in codec.sizes)
    for p in pieces:
        ids = encode(codec, p.events, voice, beat)
        probs = model.predict({n: ids[None, :-1, j] for j, n in enumerate(names)}, verbose=0)
        for j, n in enumerate(FIELDS):
            chosen = np.take_along_axis(probs[n][0], ids[1:, j][:, None], axis=1)[:, 0]
            total -= float(np.log(np.maximum(chosen, 1e-12)).sum())
        total += first
    steps = sum(p.steps16 for p in pieces)
    return {"nll_per_step16": total / steps, "pieces": len(pieces), "steps16": steps}


def main() -> None:
    import keras

    from playbach.trainer.dataset import make_windows
    from playbach.trainer.model import ModelConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=JSB)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--no-voice", action="store_true", help="the control: today's model in this script")
    parser.add_argument("--beat", action="store_true", help="also the next event's slot and its 16th in the bar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    voice, beat = not args.no_voice, args.beat and not args.no_voice
    keras.utils.set_random_seed(args.seed)
    splits = read_jsb(args.corpus)
    codec = Codec.fit([p.events for s in splits.values() for p in s], 4)
    vocab = {f: v if len(v) > 1 else [v[0], v[0] + 1] for f, v in codec.vocab.items()}
    codec = Codec(4, vocab)      # velocity's one value gets a neighbour, as trainer/train.py does
    cfg = ModelConfig(vocab_sizes=codec.sizes, pitch_values=tuple(codec.vocab["pitch"]))
    names = [*FIELDS, *(("slot", "voice_interval", "ref") if voice else ()), *(BEAT_INPUTS if beat else ())]
    train = make_windows([encode(codec, p.events, voice, beat) for p in splits["train"]], cfg.window, cfg.window // 2)
    val = make_windows([encode(codec, p.events, voice, beat) for p in splits["valid"]], cfg.window, cfg.window)
    model = build(cfg, voice, beat)
    started = time.perf_counter()
    history = model.fit(*split_xy(train, names), batch_size=64, epochs=args.epochs, verbose=2,
                        validation_data=split_xy(val, names), callbacks=[keras.callbacks.EarlyStopping(
                            patience=args.patience, restore_best_weights=True)]).history
    train_s = time.perf_counter() - started
    from jsb_voice_evidence import voiced_events   # research/ is on the path when run as a script
    rows = json.load(open(args.corpus))["valid"]
    right = sum(int((voice_features(p.events)[:, 0] == [e[3] for e in voiced_events(r)]).sum())
                for p, r in zip(splits["valid"], rows))
    result = {"voice": voice, "beat": beat, "epochs": len(history["loss"]), "best_epoch": int(np.argmin(history["val_loss"])),
              "train_s": train_s, "val_loss": min(history["val_loss"]),
              "valid": per_step16(model, codec, splits["valid"], names, voice, beat),
              "test": per_step16(model, codec, splits["test"], names, voice, beat),
              "valid_slot_is_the_voice": right / sum(len(p.events) for p in splits["valid"])}
    write_text_atomically(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
