"""The player follows a drummer's clock over real ALSA and USB (issue 24 item 4), in the emulated Pi.

The clock comes from the synth: the USB MIDI gadget's own side writes Start, 24 ticks a quarter
and Stop to its rawmidi output, which is the synth's MIDI OUT, so the Pi receives them through
dummy_hcd, snd-usb-audio and the ALSA sequencer exactly as from a drum machine or synth with a
clock out on USB. The player is set to `clock = "follow"`, `clock_port = "PiVM Synth"` (the
edits a user with such a synth makes), and its notes go back to the same synth, where the
recorder timestamps them on the same (guest monotonic) clock as the source's sends.

The source is harness/rig.py's ClockSource's script at half its tempos (see TEMPO_RUN): Start,
50 -> 70 -> 45 BPM for 16 beats each, then 16 beats at a steady 60 BPM, Stop; every tick ±1 ms
of uniform jitter around an ideal grid, every 200th tick not sent. The onsets are measured
against the source's own grid (harness/clockgrid.py, as the JACK clock bench: its ticks counted
where it sent them) by clockmeasure.py in the product's venv (it has numpy and playbach.harness).

The transport: before Start, probes (CC 119 on channel 16) go the same way round, gadget -> USB
-> sequencer, there routed straight back (`aconnect` of the synth's port to itself) -> USB ->
gadget, with nothing of the player's in between. That round trip is the path a tick takes in and
a note takes out, so "beyond the transport" is what the player adds.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

from gadget import MidiGadget
from guest import OVERRIDES, STATE, UNIT, edit_config, first_message, journal, run, wait_for
from recorder import find_card

PPQ = 24
# Half the JACK clock bench's tempos (100 -> 140 -> 90, then 120): with planning off the emulated
# player makes about 7 notes a second while following, and the chorale model at the bench's tempos
# asks 7-9, so there it fell seconds behind and its notes left as they were made, on no grid
# (bookworm, commit c24ceea: 347 notes, 4 s behind after 50 s). What is checked here is the ALSA
# and USB path and where the follower puts the notes; the bench checks the tempos themselves.
TEMPO_RUN = (50, 70, 45)       # BPM, BEATS_EACH beats each
BEATS_EACH = 16
STEADY_BPM, STEADY_BEATS = 60, 16   # (shorter than the bench's: CI's time)
JITTER = 0.001                 # s, uniform either side of each tick's due time
LOST_EVERY = 200               # every 200th tick is not sent
LEAD = 0.05                    # s from Start to the first tick
SOURCE_PRIORITY = 35           # SCHED_FIFO, above the player (20) and the recorder (30): an outside device
PROBES, PROBE_GAP = 40, 0.05   # transport probes before Start
PROBE_STATUS, PROBE_CC = 0xBF, 119
VENV_PYTHON = "/opt/playbach/venv/bin/python"
STATS = Path("/var/lib/playbach/clock-stats.json")   # the player's --stats (its StateDirectory)
TAKE = STATE / "clock-take.json"
KEPT = STATE / "overrides.kept"                       # the live changes set aside for the take
# what the checks ask, and why not the JACK bench's aims (every note on its 16th, p99 beyond
# the transport <= 2 ms): this is TCG on a shared 2-core host, where a guest vCPU can be
# descheduled for tens of ms at any moment; at 70 BPM a tick is 35.7 ms, so a note more than
# 18 ms late already lands nearest the next tick. Bounded here: lost ticks and tempo changes must
# not move the notes off their 16ths (a lost tick moved every later note one tick, for good,
# before issue 24), and what the player adds must stay well under a 16th (214 ms at 70 BPM).
ON_GRID_AIM = 0.9
# Planning off while timing is measured: the emulated CPU runs a model step about 85 times slower
# than this host (bench/results/aarch64.json), a Pi 4 several times faster than that, and with 8
# continuations drawn a beat the emulated player falls seconds behind its schedule once the
# opening is played, so its notes leave when they are made, on no grid. What is measured here is
# where the follower puts the notes, which planning does not change.
TIMING_PLAN = 0
P99_AIM_MS = 30.0
# JUDGED: where the follower put each note, against the source's grid: its due time from the
# player's --stats (the song position on the line fitted through the ticks as they came over USB
# and ALSA), and the position the player meant. The onsets the synth heard are reported beside
# (notes_on_grid, p99_beyond_transport_ms) with how late each note_on left the player after its
# due time (sent_after_due_p99_ms), but not judged: under TCG one model step takes 20-200 ms of
# the emulated CPU, and a note due during one waits for it (bookworm, commit 3e8e589: due on a
# 16th 99.6 %, heard on one 64 %). The heard timing is judged on the host's real JACK (the clock
# bench: every note on its 16th, p99 beyond the transport about 2 ms).


class GadgetClock(threading.Thread):
    """The synth's clock out: writes the script to the gadget's rawmidi output, keeping the grid
    (due, sent or None, bpm) per tick counted, as harness/rig.py's ClockSource does."""

    def __init__(self, card_id: str, seed: int = 0) -> None:
        super().__init__(daemon=True, name="clock-source")
        dev = find_card(card_id)
        if dev is None:
            raise RuntimeError(f"no rawmidi device for the synth gadget's card {card_id}")
        self.fd = os.open(dev, os.O_WRONLY)
        self.rng = random.Random(seed)
        self.grid: list[tuple[float, float | None, float]] = []
        self.marks: dict[str, float] = {}
        self.probes: list[float] = []

    def send(self, data: bytes) -> float:
        os.write(self.fd, data)
        return time.monotonic()

    def probe(self) -> None:
        for i in range(PROBES):
            self.probes.append(self.send(bytes([PROBE_STATUS, PROBE_CC, i % 128])))
            time.sleep(PROBE_GAP)

    def run(self) -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(SOURCE_PRIORITY))
        except (OSError, AttributeError):
            pass
        self.marks["start"] = self.send(b"\xfa")
        due = self.marks["start"] + LEAD
        steps = [(bpm, PPQ * BEATS_EACH) for bpm in TEMPO_RUN] + [(STEADY_BPM, PPQ * STEADY_BEATS)]
        for bpm, count in steps:
            for _ in range(count):
                delay = due + self.rng.uniform(-JITTER, JITTER) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if (len(self.grid) + 1) % LOST_EVERY == 0:
                    self.grid.append((due, None, bpm))
                else:
                    self.grid.append((due, self.send(b"\xf8"), bpm))
                due += 60.0 / (bpm * PPQ)
        self.marks["stop"] = self.send(b"\xfc")

    def close(self) -> None:
        os.close(self.fd)


def transport(recorder, sent: list[float]) -> list[float]:
    """Round trips of the probes that came back: the k-th probe's CC value is k (PROBES < 128)."""
    got = {e.b: e.t for e in recorder.snapshot() if e.kind == "cc" and e.channel == 15 and e.a == PROBE_CC}
    return [got[k] - s for k, s in enumerate(sent) if k in got and got[k] >= s]


def follow_config(config: Path) -> str:
    """The user's edits for following this synth's clock; returns the file as it was."""
    return edit_config(config, {
        "clock": '"follow"', "clock_port": '"PiVM Synth"',
        "opening": '"0"',                  # the first chord is known: the Start check
        "stats": f'"{STATS}"',             # where the player meant each note (its record)
        "plan": str(TIMING_PLAN)})         # (see TIMING_PLAN)


def measure(take: dict) -> dict:
    """clockgrid.measure in the product's venv (numpy, playbach.harness): clockmeasure.py."""
    TAKE.write_text(json.dumps(take))
    out = run(VENV_PYTHON, "/opt/pivm/clockmeasure.py", str(TAKE), timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"clockmeasure.py failed ({out.returncode}): {out.stderr[-800:]}")
    return json.loads(out.stdout)


def back_to_own(config: Path, good: str) -> float:
    """The player's own clock and the live changes set aside, back, and the player restarted
    (stopping the follower writes its --stats); the time of the restart."""
    config.write_text(good)
    if KEPT.exists():
        KEPT.replace(OVERRIDES)
    t = time.monotonic()
    run("systemctl", "restart", "--no-block", UNIT)
    return t


def clock_follow_check(config: Path, recorder, synth: MidiGadget) -> dict:
    good = follow_config(config)
    STATS.unlink(missing_ok=True)
    # The live changes kept from the page win over config.toml (issue 23): the web check leaves
    # `plan` there, and with it the edits above would be overridden by planning on (a model step
    # ten times longer under TCG, and the ticks' USB delivery starved with it). Set aside for the
    # take, as the page's reset would, and put back after it.
    KEPT.unlink(missing_ok=True)
    if OVERRIDES.exists():
        OVERRIDES.replace(KEPT)             # (its owner and mode kept: the player rewrites it)
    t = time.monotonic()
    run("systemctl", "restart", "--no-block", UNIT)
    f: dict = {"live_changes_set_aside": json.loads(KEPT.read_text()) if KEPT.exists() else None}
    following = lambda: first_message(journal("-u", UNIT, "-b"), "following MIDI clock on port", t)  # noqa: E731
    f["player_following"] = wait_for(lambda: following() is not None, 300, 1)
    f["restart_to_following_s"] = round(following()[0] - t, 1) if f["player_following"] else None
    if not f["player_following"]:
        back_to_own(config, good)
        f.update(ok=False, error="the player did not open the synth's port as its clock input")
        return f
    time.sleep(2)                                     # its output port too, and a quiet start
    source = GadgetClock(synth.card_id)
    run("aconnect", "PiVM Synth:0", "PiVM Synth:0")   # the probes' way back, nothing else on it
    source.probe()
    time.sleep(0.5)
    run("aconnect", "-d", "PiVM Synth:0", "PiVM Synth:0")
    source.start()
    source.join(timeout=300)
    time.sleep(1.0)                                   # the last notes' USB transfers
    source.close()
    events = recorder.snapshot()
    onsets = [(e.t, e.a) for e in events if e.kind == "note_on" and e.t >= source.marks["start"] - 0.1]
    trips = transport(recorder, source.probes)
    t_back = back_to_own(config, good)
    wait_for(STATS.exists, 60, 0.5)
    stats = json.loads(STATS.read_text()) if STATS.exists() else None
    f.update(measure({"grid": source.grid, "start": 0, "onsets": onsets, "transport": trips, "stats": stats}))
    f["ticks_sent"] = sum(sent is not None for _, sent, _ in source.grid)
    f["source_seconds"] = round(source.marks["stop"] - source.marks["start"], 2)
    f["probes_back"] = len(trips)
    note = recorder.wait_note_after(t_back, 300)
    f["back_to_internal_to_note_s"] = note and round(note - t_back, 2)
    f["notes_on_grid"] = (f.get("net_of_transport") or {}).get("on_a_16th")
    f["p99_beyond_transport_ms"] = (f.get("all") or {}).get("beyond_transport_ms", {}).get("p99")
    own = f.get("players_own") or {}
    f["due_on_grid"] = own.get("due_on_a_16th")
    f["due_at_intended_position"] = own.get("due_at_intended_position")
    f["due_p99_ms"] = (own.get("due_from_tick_ms") or {}).get("p99")
    f["sent_after_due_p99_ms"] = (own.get("sent_after_due_ms") or {}).get("p99")
    f["aims"] = {"due_on_grid": ON_GRID_AIM, "due_at_intended_position": ON_GRID_AIM, "due_p99_ms": P99_AIM_MS,
                 "notes_in_first_0_6_quarter": "at most the opening's own notes there (no burst at Start)",
                 "heard": "reported, not judged: see JUDGED"}
    f["ok"] = bool(f["notes"] >= 100 and f["probes_back"] >= PROBES // 2
                   and all(f[k] is not None for k in ("due_on_grid", "due_at_intended_position", "due_p99_ms"))
                   and f["due_on_grid"] >= ON_GRID_AIM and f["due_at_intended_position"] >= ON_GRID_AIM
                   and f["due_p99_ms"] <= P99_AIM_MS
                   and f["notes_in_first_0_6_quarter"] <= f["opening_notes_in_first_0_6_quarter"]
                   and note is not None)
    return f
