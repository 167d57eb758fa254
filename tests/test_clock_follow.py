"""The MIDI clock follower's logic, fed timed messages directly (no ports): fast tier."""
import json
import logging
import random
from pathlib import Path

import pytest

from fixtures_clock import stalled_change_take

from playbach.device.clockreplay import replay
from playbach.device.follower import LOSS_SECONDS, PPQ, Follower

TICK, START, CONTINUE, STOP = [0xF8], [0xFA], [0xFB], [0xFC]
TRIXIE_TAKE = Path(__file__).parent / "data" / "clock-take-trixie.json"


def ticks(f, t, bpm, count, jitter=0.0, rng=random.Random(0)):
    """Feed `count` ticks at `bpm` from time t; return the time of the next one."""
    for _ in range(count):
        f.feed(TICK, t + rng.uniform(-jitter, jitter))
        t += 60 / (bpm * PPQ)
    return t


def test_start_stop_continue_and_song_position():
    f = Follower(bpm=90)
    t = ticks(f, 0.0, 120, 10)          # ticks while stopped: tempo, no position
    assert not f.running and f.position == 0
    assert f.feed(START, t) == "start"
    t = ticks(f, t, 120, 30)
    assert f.song_position(f.count) == 29
    assert f.feed(STOP, t) == "stop" and not f.running
    assert f.position == 30              # where Continue resumes
    f.feed([0xF2, 0x05, 0x01], t)       # SPP 133 sixteenths
    assert f.position == 133 * 6
    assert f.feed(CONTINUE, t) == "start"
    ticks(f, t, 120, 3)
    assert f.song_position(f.count) == 133 * 6 + 2
    # the fitted line puts a position at the time its tick came
    assert f.time_of_position(133 * 6 + 2) == pytest.approx(t + 2 * 60 / (120 * PPQ), abs=1e-6)


@pytest.mark.parametrize("pause", [0.1, 0.45, 0.6, 3.0])
def test_ticks_after_a_pause_are_placed_by_the_new_ticks_not_the_old_line(pause):
    """The clock stops ticking at Stop and starts again at Continue: the line fitted before the
    pause says nothing about when the resumed ticks come, however short the pause."""
    f = Follower(bpm=90)
    f.feed(START, 0.0)
    t = ticks(f, 0.0, 120, 24 * 2)
    f.feed(STOP, t)
    t += pause
    f.feed(CONTINUE, t)
    t = ticks(f, t, 120, 3)
    position = f.song_position(f.count)
    assert f.time_of_position(position + 6) == pytest.approx(t + 5 * 60 / (120 * PPQ), abs=1e-3)


def test_tempo_smoothed_and_a_jump_taken_within_two_beats():
    f = Follower(bpm=90)
    f.feed(START, 0.0)
    t = ticks(f, 0.0, 100, 24 * 8, jitter=0.001)
    assert f.bpm == pytest.approx(100, rel=0.003)
    jump = t
    settled = None
    for i in range(24 * 4):
        t = ticks(f, t, 140, 1, jitter=0.001)
        if abs(f.bpm - 140) > 1.4:
            settled = None
        elif settled is None:
            settled = i + 1
    assert settled is not None and settled / PPQ <= 2, f"within 1 % only after {settled} ticks"
    assert (t - jump) > 0


def test_absurd_tempo_and_bad_spp_ignored_with_one_line(caplog):
    f = Follower(bpm=90)
    f.arrivals = []   # as under --stats: every tick's arrival is kept, the ignored ones too
    f.feed(START, 0.0)
    with caplog.at_level(logging.WARNING):
        t = ticks(f, 0.0, 120, 24)
        count = f.count
        t = ticks(f, t, 1000, 50)       # > 400 BPM
        f.feed([0xF2, 0x80, 0x01], t)   # data byte with the high bit
        f.feed([0xF2, 0x01], t)         # short
    assert f.count - count <= 4          # only the ticks before the average saw the change
    assert f.position == 0
    lines = [r.getMessage() for r in caplog.records]
    assert sum("outside 20-400" in m for m in lines) == 1, lines
    assert sum("malformed Song Position Pointer" in m for m in lines) == 2
    assert len(f.arrivals) == 24 + 50 and f.arrivals == sorted(f.arrivals)


def test_clock_loss_stops_once():
    f = Follower(bpm=90)
    f.feed(START, 0.0)
    t = ticks(f, 0.0, 120, 48)
    assert not f.lost(t + LOSS_SECONDS - 0.1)
    assert f.lost(t + LOSS_SECONDS + 0.1) and not f.running
    assert not f.lost(t + LOSS_SECONDS + 1)


def test_ticks_delivered_in_clumps_keep_tempo_and_position():
    """A busy host delivers ticks late and a few at once (never early): 0-30 ms late in clumps at
    120 BPM. Every tick is taken (no absurd tempo refused), the tempo is the clock's and the song
    position is the count sent, the lost ticks aside (in such noise a gap is lateness as likely as
    loss, so none is counted lost). The follower before read such clumps as thousands of BPM."""
    rng = random.Random(1)
    f = Follower(bpm=90)
    f.feed(START, 0.0)
    period = 60 / (120 * PPQ)
    deliveries, t = [], 0.0
    while t < 30:
        t += rng.uniform(0.001, 0.03)
        deliveries.append(t)
    sent, lost, d = 0, 0, 0
    for i in range(24 * 48):
        due = 0.05 + i * period
        if (i + 1) % 200 == 0:
            lost += 1
            continue
        while deliveries[d] < due:
            d += 1
        f.feed(TICK, deliveries[d])
        sent = i
    assert f.bpm == pytest.approx(120, rel=0.01)
    assert sent - lost <= f.song_position(f.count) <= sent


@pytest.mark.parametrize("late_ms", (20, 30, 37))
def test_a_late_tick_just_before_a_judged_tempo_does_not_tilt_it(late_ms):
    """50 -> 70 BPM, the third tick after the change `late_ms` late: it fits the old, slower line
    by chance and is taken onto it, then the new tempo is judged on the ticks after it. From then
    on every tick's tempo is within 2 % of 70. The follower before kept that tick in the new line:
    84-101 BPM for three ticks (97.6 in the emulated Pi's bookworm take, where a stall followed
    and a tick lost in it went uncounted)."""
    f = Follower(bpm=90)
    f.feed(START, -0.05)
    t = ticks(f, 0.0, 50, 16 * PPQ, jitter=0.001, rng=random.Random(0))
    judged = []
    for k in range(2 * PPQ):
        f.feed(TICK, t + (late_ms / 1000 if k == 2 else 0.0))
        t += 60 / (70 * PPQ)
        if f.bpm > 55:
            judged.append(round(f.bpm, 1))
    assert judged and all(abs(bpm - 70) <= 1.4 for bpm in judged), judged


def clumped_take(seed: int, every: float) -> int:
    """50 BPM for 16 beats then 70 for 16, ±1 ms of jitter, every 200th tick not sent, handed
    over only every `every` s (±20 %), all ticks sent since at once: the emulated bookworm Pi's
    USB while the player's model step held its CPU. The follower's count less the source's at the end."""
    rng = random.Random(seed)
    f, due, sends = Follower(bpm=90), 1.0, []
    for i in range(32 * PPQ):
        if (i + 1) % 200:
            sends.append((i, due + rng.uniform(-0.001, 0.001)))
        due += 60 / ((50 if i < 16 * PPQ else 70) * PPQ)
    f.feed(START, 0.95)
    handed = 1.0 + rng.uniform(0, every)
    for i, sent in sends:
        while handed < sent:
            handed += every * rng.uniform(0.8, 1.2)
        f.feed(TICK, handed + 0.002)
    return f.song_position(f.count) - sends[-1][0]


def test_ticks_handed_over_five_times_a_second_through_a_tempo_change_keep_the_count():
    """Clumps of up to 7 ticks every 0.2 s: the count ends at the source's, less the 3 ticks not
    sent (in such noise a gap is lateness as likely as loss) and at most 2 more, in 8 of 8 takes.
    The follower before left the gaps between clumps out of the tempo it judged ticks by, so every
    clump read as thousands of BPM and its ticks were refused: 5 of 8 takes ended 27-320 behind."""
    ends = [clumped_take(seed, 0.2) for seed in range(8)]
    assert all(-5 <= end <= 0 for end in ends), ends


def stalled_take(seed: int, stall_p: float) -> list[int]:
    """The source's script of the clock benches (100, 140, 90 BPM for 16 beats each, 48 at 120,
    ±1 ms jitter, every 200th tick not sent) through a transport like an emulated Pi's: 4-6 ms
    on the way, and now and then (`stall_p` of the ticks) a stall of 5-30 ms that holds every
    tick sent in it until it ends (late, in order, then a clump). Per tick the follower took: its
    song position less the source's count."""
    rng = random.Random(seed)
    f = Follower(bpm=120)
    t, i, stall_end, last, errors = 1.0, 0, -1.0, 0.0, []
    f.feed(START, t - 0.05)
    for bpm, beats in ((100, 16), (140, 16), (90, 16), (120, 48)):
        for _ in range(beats * PPQ):
            sent = t + rng.uniform(-0.001, 0.001)
            if sent > stall_end and rng.random() < stall_p:
                stall_end = sent + rng.uniform(0.005, 0.030)
            arrived = max(sent + rng.uniform(0.004, 0.006), stall_end + 0.004 if sent <= stall_end else 0.0, last)
            if (i + 1) % 200:
                f.feed(TICK, arrived)
                last = arrived
                errors.append(f.song_position(f.count) - i)
            i += 1
            t += 60 / (bpm * PPQ)
    return errors


@pytest.mark.parametrize("stall_p", (0.01, 0.03))
def test_a_transport_that_stalls_now_and_then_keeps_the_sources_count(stall_p):
    """A stall's late ticks are not lost ones, and a lost tick is found after a stall too: over
    ten takes of 2,300 ticks, at most one ends off the source's count, and ticks on it are the
    rule (here no take off the count, 0.8 % and 1.2 % of ticks). The follower before
    counted a stall's late tick as lost and missed lost ticks while stalls made the ticks stray:
    5 and 7 takes of 10 ended off the count, and 37 % and 39 % of ticks were."""
    takes = [stalled_take(seed, stall_p) for seed in range(10)]
    assert sum(e[-1] != 0 for e in takes) <= 1, [e[-1] for e in takes]
    off = sum(sum(x != 0 for x in e) for e in takes) / sum(len(e) for e in takes)
    assert off < 0.15, off


def test_a_tick_lost_while_a_new_tempo_is_judged_is_counted(caplog):
    """After a stall that hides a tempo change, the new tempo is judged on the ticks off the line;
    a tick lost among them makes one gap two of their periods: counted as lost, not taken for
    uneven ticks (the follower before dropped it: 5 of 5 takes ended a tick behind the source,
    as the emulated Pi's did after a stall at a tempo change)."""
    with caplog.at_level(logging.ERROR):
        off = [replay(stalled_change_take(16 * PPQ - 3, seed))["off_at_end"] for seed in range(5)]
    assert off == [0] * 5, off


def changed_take(bpm: float, ratio: float, seed: int, ramp: int = 0) -> list[int]:
    """Four beats at `bpm`, then 20 at `bpm` * `ratio`, reached at once or over `ramp` ticks;
    ±1 ms of jitter. Per tick the follower took: its song position less the source's count."""
    rng, f, t, errors = random.Random(seed), Follower(bpm=120), 0.05, []
    f.feed(START, 0.0)
    for i in range(24 * PPQ):
        step = min(max(i - 4 * PPQ, 0) / ramp, 1.0) if ramp else float(i >= 4 * PPQ)
        f.feed(TICK, t + rng.uniform(-0.001, 0.001))
        errors.append(f.song_position(f.count) - i)
        t += 60 / (bpm * (1 + (ratio - 1) * step) * PPQ)
    return errors


@pytest.mark.parametrize("bpm", (50, 120, 200))
@pytest.mark.parametrize("ramp", (0, PPQ, 4 * PPQ))
def test_a_small_change_of_tempo_keeps_the_count(bpm, ramp):
    """A change of tempo by 2-15 %, at once or over one or four beats, keeps every tick on the
    source's count (3 seeds each). A change under MIN_DRIFT (10 %) a tick leaves the line too
    slowly to be judged a new tempo and too fast for the line to follow: the follower before
    counted it as lost ticks once its ticks were most of a period off (120 -> 126 BPM at once:
    3 of 3 takes 1-2 ticks off for good; of 132 takes at 50-200 BPM changed by 0.85-1.3, 62 ended
    off the count, and of the same over a four-beat ramp 34; now none)."""
    for ratio in (0.85, 0.9, 0.95, 0.98, 1.02, 1.05, 1.1, 1.15):
        for seed in range(3):
            errors = changed_take(bpm, ratio, seed, ramp)
            assert not any(errors), (ratio, seed, [(i, e) for i, e in enumerate(errors) if e][:5])


def test_the_emulated_trixie_take_keeps_the_sources_count():
    """A real take (tests/data/clock-take-trixie.json, the emulated Pi's clock check on trixie, on
    a host slower than bookworm's): a stall of 0.2 s at the change from 70 to 45 BPM, then the
    line judged on its late ticks 6 % fast. Replayed, the count ends on the source's and ticks
    are off it only while a lost tick is found. The follower before could not follow that 6 %: it
    counted the drift as lost ticks and ended 2 ahead, 739 of 1,529 ticks off (the check saw due
    on a 16th 2 %)."""
    result = replay(json.loads(TRIXIE_TAKE.read_text()))
    assert result["off_at_end"] == 0 and result["ticks_off"] <= 0.05 * result["ticks"], result
