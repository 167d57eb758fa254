"""MIDI clock in and out, panic and a flood, through real JACK ports: the player as a subprocess,
a clock source and a flood client of the test's own (harness/rig.py), a timestamping receiver."""
import json
import time
from types import SimpleNamespace

import pytest
from fixtures_midi import assert_no_stuck_notes
from fixtures_player import Running, all_notes_off, note_ons, wait_until

from playbach.bundle import load_bundle
from playbach.device import clock as clock_module
from playbach.harness import clockgrid, jack
from playbach.harness.livebench import _cpu_seconds, _rss_kb
from playbach.harness.rig import ClockSource, Flood

pytestmark = pytest.mark.midi
BPM = 120
TICK_S = 60 / (BPM * 24)


@pytest.fixture(scope="module")
def bundle(play_bundle):
    return play_bundle


@pytest.fixture
def source(jack_server):
    src = ClockSource(client=f"playbach-clocksrc-{time.monotonic_ns()}")
    yield src
    src.close()


def follow(bundle, jack_server, receiver, source, tmp_path, *args):
    player = Running(bundle, "--clock", "follow", "--clock-port", source.name.split(":")[0], "--port",
                     receiver.name, "--stats", tmp_path / "stats.json", "--realtime-priority", 10, *args,
                     env=jack_server.env())
    player.wait_for("following MIDI clock on port")
    time.sleep(0.5)
    return player


def test_follow_start_stop_continue_spp(bundle, jack_server, receiver, source, tmp_path):
    player = follow(bundle, jack_server, receiver, source, tmp_path)
    source.run([("ticks", BPM, 24), ("msg", [0xFA]), ("ticks", BPM, 24 * 6), ("msg", [0xFC]),
                ("pause", 0.5), ("msg", [0xF2, 3, 0]), ("msg", [0xFB]), ("ticks", BPM, 24 * 4), ("msg", [0xFC])])
    source.wait()
    time.sleep(0.3)
    rc, _ = player.stop()
    assert rc == 0, player.log
    messages = receiver.taken()
    log = source.log
    start = next(t for t, m in log if m == [0xFA])
    stops = [t for t, m in log if m == [0xFC]]
    cont = next(t for t, m in log if m == [0xFB])
    ons = note_ons(messages)
    assert not [t for t, _ in ons if t < start], "played before Start"
    first_part = [t for t, _ in ons if start < t < stops[0]]
    assert len(first_part) >= 4, player.log
    # Stop: every sounding note ended at once, and silence until Continue
    assert not [t for t, _ in ons if stops[0] + 0.02 < t < cont]
    assert_no_stuck_notes([m for t, m in messages if t < cont])
    # notes land on the clock's 16th ticks, counted in song position from Start / the SPP
    stats = json.loads((tmp_path / "stats.json").read_text())
    ticks_first = [t for t, m in log if m == [0xF8] and start < t < stops[0]]
    ticks_cont = [t for t, m in log if m == [0xF8] and t > cont]
    per_quarter = load_bundle(bundle).codec.ticks_per_quarter   # the bundle's grid, not the clock's
    checked = 0
    for (t_on, _), tick in zip(stats["note_ons"], stats["note_ticks"]):
        position, between = divmod(tick * 24, per_quarter)   # in clock ticks (24 per quarter)
        ticks, base = (ticks_first, 0) if t_on < stops[0] else (ticks_cont, 3 * 6)
        assert position >= base, "a note before the song position it resumed at"
        if between == 0 and position - base < len(ticks):   # a note on a clock tick is sent at that tick
            assert abs(t_on - ticks[position - base]) < 0.008, (position, t_on - ticks[position - base])
            checked += 1
    assert checked >= 4, stats["note_ticks"]
    assert any(t_on > cont for t_on, _ in stats["note_ons"]), "nothing played after Continue"
    # the player's record of its sends: each note_on went out when it was due, soon after (its due
    # time is read off the fitted line when the note ends, which the ticks since may have moved by
    # a few ms: JACK's 5.3 ms period here and the source's ±1 ms jitter)
    late = clockgrid.sent_after_due(stats)
    assert late is not None and all(-0.005 <= x < 0.05 for x in late), \
        late and [round(x, 4) for x in late if not -0.005 <= x < 0.05]
    assert_no_stuck_notes(messages)


def test_follows_a_tempo_change(bundle, jack_server, receiver, source, tmp_path):
    player = follow(bundle, jack_server, receiver, source, tmp_path)
    source.run([("msg", [0xFA]), ("ticks", 100, 24 * 4), ("ticks", 140, 24 * 4), ("msg", [0xFC])], jitter=0.001)
    source.wait()
    player.stop()
    tempo = json.loads((tmp_path / "stats.json").read_text())["clock_tempo"]
    jump = next(t for t, bpm in source.ticks if bpm == 140)
    before = [b for t, b in tempo if jump - 1 < t < jump]
    after = [b for t, b in tempo if t > jump + 2 * 60 / 140]
    assert before and all(abs(b - 100) < 1 for b in before), before
    assert after and all(abs(b - 140) < 1.4 for b in after), after


def test_clock_loss_stops_cleanly_and_waits(bundle, jack_server, receiver, source, tmp_path):
    player = follow(bundle, jack_server, receiver, source, tmp_path)
    source.run([("msg", [0xFA]), ("ticks", BPM, 24 * 3)])
    source.wait()
    last_tick = source.log[-1][0]
    player.wait_for("no MIDI clock for 2 s", timeout=6)
    time.sleep(1.0)
    messages = receiver.taken()
    assert note_ons(messages), player.log
    assert not [t for t, _ in note_ons(messages) if t > last_tick + 0.6]
    assert_no_stuck_notes(messages)
    assert player.proc.poll() is None, "it should wait, not exit"
    assert player.stop()[0] == 0


def test_sent_clock_evenly_spaced_at_tempo(bundle, jack_server):
    rec = jack.Receiver(client=f"playbach-rec-clk-{time.monotonic_ns()}", timing=True)
    try:
        # planning on (the default): a planned beat yields at the next tick, so the ticks keep time
        player = Running(bundle, "--clock", "send", "--bpm", 150, "--port", rec.name, "--seconds", 3,
                         "--realtime-priority", 10, env=jack_server.env())
        rc = player.proc.wait(30)
        assert rc == 0, player.log
        time.sleep(0.05)
        messages = [m for _, m in rec.taken()]
        ticks = [t for t, m in rec.taken() if m == [0xF8]]
    finally:
        rec.close()
    assert messages.count([0xFA]) == 1 and messages.count([0xFC]) == 1
    assert messages.index([0xFA]) < messages.index([0xF8]) < messages.index([0xFC])
    # the tempo from the whole run (each arrival is quantized to JACK's period, 5.3 ms here)
    interval = (ticks[-1] - ticks[0]) / (len(ticks) - 1)
    assert interval == pytest.approx(60 / (150 * 24), rel=0.01)
    assert len(ticks) == pytest.approx(3 * 150 / 60 * 24, rel=0.1)
    # evenly spaced: each tick within a JACK period (+ 2 ms for this shared machine) of the even grid
    off = sorted(abs(t - (ticks[0] + i * interval)) for i, t in enumerate(ticks))
    assert off[int(len(off) * 0.99)] < 256 / 48000 + 0.002


def test_panic_ends_every_note_at_the_receiver(bundle, jack_server, receiver, tmp_path):
    knob = ClockSource(client=f"playbach-keys-{time.monotonic_ns()}")   # any JACK output will do
    try:
        player = Running(bundle, "--port", receiver.name, "--input-port", knob.name.split(":")[0], "--bpm", 200,
                         env=jack_server.env())
        player.wait_for("listening on input port")
        wait_until(lambda: len(note_ons(receiver.taken())) > 6, what="notes")
        knob.send([0xB0, 123, 0])
        sent = time.monotonic()
        player.wait_for("panic: every sounding note ended", timeout=5)
        # everything struck before the panic's all-notes-off reached the receiver is ended by it
        # (however long the loop took to read the knob: that is not what is checked here)
        def all_offs():
            return [t for t, m in receiver.taken() if t >= sent and m[0] & 0xF0 == 0xB0 and m[1] == 123]
        wait_until(all_offs, what="all-notes-off")
        cut = min(all_offs())
        assert_no_stuck_notes([(t, m) for t, m in receiver.taken() if t <= cut])
        wait_until(lambda: [t for t, _ in note_ons(receiver.taken()) if t > sent + 0.1], what="music after panic")
        assert player.stop()[0] == 0
    finally:
        knob.close()


def test_flood_keeps_playing_with_bounded_memory(bundle, jack_server, receiver):
    flood = Flood(client=f"playbach-flood-{time.monotonic_ns()}")
    try:
        player = Running(bundle, "--port", receiver.name, "--input-port", flood.name.split(":")[0], "--bpm", 120,
                         "--realtime-priority", 10, env=jack_server.env())
        player.wait_for("listening on input port")
        wait_until(lambda: note_ons(receiver.taken()), what="notes")
        time.sleep(0.5)
        rss_before = _rss_kb(player.proc.pid)
        began = time.monotonic()
        flood.run(seconds=4, rate=20000)
        flood.wait()
        rss_after = _rss_kb(player.proc.pid)
        during = [t for t, _ in note_ons(receiver.taken()) if began + 0.5 < t < began + 4]
        assert len(during) >= 8, player.log          # 120 BPM: it kept playing through the flood
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
        assert flood.count > 50000
        assert player.log.count("flood:") <= 2        # one line as it starts, not one per message
        assert player.stop()[0] == 0
        assert_no_stuck_notes(receiver.taken())
    finally:
        flood.close()


def test_clock_input_never_places_a_message_before_it_arrived(monkeypatch):
    """An arrival time is the port's own clock plus the smallest (drain time - port clock) seen.
    The drain time is read when the messages have been taken: the flake this replaced had the loop
    pass's `now` there, read before the port check, which took ~40 ms under load (JACK's port list);
    a tick arriving meanwhile made the offset 40 ms too small, and every note followed it early
    for OFFSET_WINDOW (test_follow_start_stop_continue_spp: a note 41 ms before its tick)."""
    clock = [100.0]
    monkeypatch.setattr(clock_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    pending = []

    class Port:   # rtmidi's get_message: (message, seconds since the previous one) or None
        def get_message(self):
            return pending.pop(0) if pending else None

    port = clock_module.ClockInput.__new__(clock_module.ClockInput)
    port.client, port.name, port.port_clock, port.offsets = Port(), "source", 0.0, clock_module.deque()
    got = []
    arrivals = [100.0, 100.0208, 100.0417]
    for i, arrived in enumerate(arrivals):
        pending.append(([0xF8], 0.0 if i == 0 else arrived - arrivals[i - 1]))
        clock[0] = arrived + (0.001 if i != 1 else 0.040)   # the second one waits 40 ms to be drained
        port.drain(lambda data, t: got.append(t))
    assert len(got) == 3
    for estimate, arrived in zip(got, arrivals):
        assert arrived <= estimate < arrived + 0.0015, (got, arrivals)


def test_follow_on_the_sources_grid_with_lost_ticks(bundle, jack_server, receiver, source, tmp_path):
    """Through real JACK ports: every note on a 16th of the source's own grid (its count, the
    ticks it left unsent included), so neither the Start nor a lost tick moves the beat."""
    from playbach.harness import clockgrid

    player = follow(bundle, jack_server, receiver, source, tmp_path)
    source.run([("msg", [0xFA]), ("ticks", BPM, 24 * 8), ("msg", [0xFC])], jitter=0.001, drop_every=40)
    source.wait()
    time.sleep(0.3)
    assert player.stop()[0] == 0, player.log
    start = next(i for m, i in source.marks if m == [0xFA])
    onsets = [t for t, _ in note_ons(receiver.taken())]
    m = clockgrid.measure(source.grid, start, onsets, [0.0])
    assert m["ticks_not_sent"] >= 4 and m["notes"] >= 8, (m, player.log)
    # two JACK hops (the tick in, the note out), each up to a period (256 frames here), + 2 ms
    hops_ms = (2 * 256 / 48000 + 0.002) * 1e3
    assert m["all"]["onset_from_tick_ms"]["max"] < hops_ms, m["all"]
    # every note on a 16th of the source's grid, within those two hops: one that much late is
    # nearer the next tick (half a tick is 10.4 ms here) and counted off its 16th by clockgrid
    from_16th = [min(abs(e + (p % 6) * TICK_S * 1e3), abs(e - (6 - p % 6) * TICK_S * 1e3)) for p, e in m["off_16th"]]
    assert all(d < hops_ms for d in from_16th), m["off_16th"]
    assert_no_stuck_notes(receiver.taken())


@pytest.mark.parametrize("bpm", [120, 150])
def test_waiting_for_start_the_player_sleeps_and_its_first_chord_leaves_with_the_first_tick(
        bundle, jack_server, receiver, source, tmp_path, bpm):
    """While the clock waits for Start the first notes are made ready and then the loop sleeps
    (at 150 BPM the ready notes can fill the lookahead exactly, which must not make it spin)."""
    player = follow(bundle, jack_server, receiver, source, tmp_path, "--bpm", bpm)
    time.sleep(1.0)
    before = _cpu_seconds(player.proc.pid)
    time.sleep(3.0)
    busy = (_cpu_seconds(player.proc.pid) - before) / 3.0
    assert busy < 0.15, f"the player used {busy:.0%} of a CPU waiting for Start"
    assert not note_ons(receiver.taken()), "played before Start"
    source.run([("msg", [0xFA]), ("ticks", bpm, 24 * 2), ("msg", [0xFC])])
    source.wait()
    time.sleep(0.3)
    assert player.stop()[0] == 0, player.log
    first_tick = next(t for t, m in source.log if m == [0xF8])
    first = min(t for t, _ in note_ons(receiver.taken()))
    assert 0 <= first - first_tick < 0.02, f"the first note {1e3 * (first - first_tick):.1f} ms after the first tick"


def test_a_start_stop_flood_on_the_clock_port_is_logged_once_a_second_and_silenced_once(
        bundle, jack_server, receiver, source, tmp_path):
    """A clock port sending Stop and Start thousands of times a second (a broken or hostile
    device): the journal gets a line a second, not one per message; the synth gets all-notes-off
    when notes were struck, not every loop pass; and the take plays on once the clock is sane."""
    player = follow(bundle, jack_server, receiver, source, tmp_path)
    flood = [("ticks", BPM, 1), *[("msg", [0xFC]), ("msg", [0xFA])] * 100] * (2 * 48)   # 2 s, ~9,600/s
    source.run([("msg", [0xFA]), ("ticks", BPM, 24 * 2), *flood, ("ticks", BPM, 24 * 4), ("msg", [0xFC])])
    source.wait()
    time.sleep(0.3)
    assert player.stop()[0] == 0, player.log[-2000:]
    starts = [t for t, m in source.log if m == [0xFA]]
    assert len(starts) > 9000
    flood_began, flood_ended = starts[1], starts[-1]
    lines = player.log.count("MIDI clock Start") + player.log.count("MIDI clock Continue")
    assert lines <= 3 + (flood_ended - flood_began), player.log[-2000:]
    # all-notes-off once, and again only after a note struck since (one may slip in between a
    # tick and the Stop after it): not at every loop pass that took a Stop
    window = [(t, m) for t, m in receiver.taken() if flood_began <= t <= flood_ended + 0.1]
    offs, struck = all_notes_off(window), note_ons(window)
    assert len(offs) <= 1 + len(struck), f"{len(offs)} all-notes-off, {len(struck)} notes, in the flood"
    assert [t for t, _ in note_ons(receiver.taken()) if t > flood_ended + 0.1], "nothing played after the flood"
    assert_no_stuck_notes(receiver.taken())
