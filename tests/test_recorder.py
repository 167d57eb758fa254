"""device/recorder.py: the take written in segments as it is played (issue 22 item 4).

Real files, a real kill, a real full tmpfs and a read-only mount (those two need root, as this
machine's tests run); a 24-hour take on a simulated clock for the memory bound."""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from playbach.device.recorder import Recorder
from playbach.midifile import read_midi

T0 = 1_796_000_000.0   # a wall-clock time (2026-11-29) for names that do not depend on today
NAME = re.compile(r"take-\d{8}T\d{6}Z(-\d+)?\.mid")


@dataclass
class N:   # what the scheduler hands over as a note ends (device/scheduler.py Played)
    pitch: int
    velocity: int
    on_time: float
    off_time: float


def notes(seconds: float, per_second: float = 4.0, start: float = 1000.0) -> list[N]:
    """A steady stream: a note every 1/per_second s, each a quarter long at 120 BPM."""
    step = 1.0 / per_second
    return [N(48 + i % 36, 60 + i % 60, start + i * step, start + i * step + 0.5)
            for i in range(int(seconds * per_second))]


def recorder(folder: Path, segment: float, **kw) -> Recorder:
    return Recorder(folder, segment_seconds=segment, bpm=120.0, wall_clock=lambda: T0,
                    monotonic=lambda: 1000.0, **kw)


def read_back(folder: Path) -> list[tuple[str, list]]:
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    assert all(NAME.fullmatch(p.name) for p in files), [p.name for p in files]
    return [(p.name, read_midi(p)) for p in files]


def test_segments_hold_every_note_at_its_time_named_by_when_they_began(tmp_path):
    played = notes(125)
    rec = recorder(tmp_path / "takes", 30.0, grace=2.0)
    for n in played:
        rec.add(n)
    rec.close()
    files = read_back(tmp_path / "takes")
    # 0-30, 30-60, 60-90, 90-120, 120-125 s: five files, by the wall-clock time each began
    assert [name for name, _ in files] == [time.strftime("take-%Y%m%dT%H%M%SZ.mid", time.gmtime(T0 + k * 30))
                                           for k in range(5)]
    got = []
    for k, (_, held) in enumerate(files):
        got += [(round(k * 30 + start * 0.5, 3), pitch, velocity) for start, pitch, _, velocity in held]
    want = [(round(n.on_time - 1000.0, 3), n.pitch, n.velocity) for n in played]
    assert sorted(got) == sorted(want)
    assert rec.files_written == 5 and rec.dropped_slow == rec.dropped_failed == 0


def test_a_player_behind_its_schedule_still_writes_each_segment_once(tmp_path):
    """On a slow machine the loop logs notes whose onsets are well before its own clock (here
    40 s): the segments close by the take's time, not the loop's, so each is one file with all its
    notes (before: the loop's clock closed them early and every later note became a file of its own)."""
    clock = [1000.0]
    rec = Recorder(tmp_path / "takes", segment_seconds=10.0, bpm=120.0, grace=5.0, wall_clock=lambda: T0,
                   monotonic=lambda: clock[0])
    played = notes(60)
    for n in played:
        clock[0] = n.off_time + 40.0   # the loop, 40 s behind the schedule it plays
        rec.add(n)
        rec.poll(clock[0])
    rec.close()
    files = read_back(tmp_path / "takes")
    assert len(files) == 6, [name for name, _ in files]
    assert sum(len(got) for _, got in files) == len(played)


def test_a_note_sounding_across_the_boundary_stays_in_the_segment_it_began_in(tmp_path):
    rec = recorder(tmp_path, 10.0, grace=5.0)
    rec.add(N(60, 90, 1000.0, 1000.5))
    rec.add(N(62, 90, 1011.0, 1011.5))     # the next segment begins; the long note has not ended
    rec.add(N(40, 90, 1009.0, 1013.0))     # it ends now: still 10 s of segment 0 + 5 s grace
    rec.close()
    (_, first), (_, second) = read_back(tmp_path)
    assert sorted(p for _, p, _, _ in first) == [40, 60] and [p for _, p, _, _ in second] == [62]
    long = next(n for n in first if n[1] == 40)
    assert long[0] == pytest.approx(18.0) and long[2] == pytest.approx(8.0)   # quarters at 120 BPM


def test_a_new_take_never_overwrites_one_with_the_same_time(tmp_path):
    for _ in range(2):
        rec = recorder(tmp_path, 60.0)
        for n in notes(5):
            rec.add(n)
        rec.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        time.strftime("take-%Y%m%dT%H%M%SZ-2.mid", time.gmtime(T0)),
        time.strftime("take-%Y%m%dT%H%M%SZ.mid", time.gmtime(T0))]


@pytest.mark.slow   # about 20 s: mido encodes a day of notes
def test_a_day_of_music_is_written_with_bounded_memory(tmp_path):
    """24 hours at 2 notes a second on a simulated clock (172,800 notes); the writer keeps up as a
    disk does in real time, so the test waits for it now and then. What the recorder holds is
    counted (open notes, queued segments), and the process's peak memory may not grow after the
    first hour."""
    rec = recorder(tmp_path, 900.0, grace=30.0)
    peak_open, peak_queued, rss = 0, 0, []
    for i, n in enumerate(notes(24 * 3600, 2.0)):
        rec.add(n)
        peak_open = max(peak_open, sum(len(s.notes) for s in rec.open.values()))
        peak_queued = max(peak_queued, rec.queue.qsize())
        if i % 1800 == 0:   # each simulated 15 minutes
            while rec.queue.qsize():
                time.sleep(0.005)
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)   # KiB
    rec.close(timeout=60)
    assert rec.files_written == 96 and len(list(tmp_path.glob("take-*.mid"))) == 96
    assert peak_open <= (900 + 30) * 2 and peak_queued <= 2, (peak_open, peak_queued)
    assert rss[-1] - rss[4] < 16 * 1024, f"peak memory grew {rss[-1] - rss[4]} KiB from hour 1 to hour 24"


def test_files_and_their_folder_are_fsynced(tmp_path):
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    script = textwrap.dedent(f"""
        import sys; sys.path[:0] = {sys.path!r}
        from dataclasses import dataclass
        from playbach.device.recorder import Recorder
        @dataclass
        class N:
            pitch: int; velocity: int; on_time: float; off_time: float
        rec = Recorder({str(tmp_path / 'takes')!r}, segment_seconds=10.0)
        for i in range(100):
            rec.add(N(60, 90, i * 0.5, i * 0.5 + 0.4))
        rec.close()
        """)
    done = subprocess.run(["strace", "-f", "-e", "trace=openat,fsync,rename,renameat,renameat2", sys.executable,
                           "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    synced = fsynced_paths(done.stderr)
    files = sorted(str(p) for p in (tmp_path / "takes").iterdir())
    assert len(files) == 5
    for f in files:   # the file as written beside, then renamed
        assert str(Path(f).with_name(f".{Path(f).name}.partial")) in synced, (f, synced)
    assert str(tmp_path / "takes") in synced, synced


def fsynced_paths(trace: str) -> set[str]:
    """The paths fsync(2) was called on, from `strace -f` output (threads' calls interleave)."""
    fds: dict[tuple[str, str], str] = {}
    pending: dict[str, str] = {}
    synced = set()
    for line in trace.splitlines():
        pid = re.match(r"\[pid\s+(\d+)\]", line)
        pid = pid.group(1) if pid else "main"
        opened = re.search(r'openat\(AT_FDCWD, "([^"]+)"', line)
        if opened and "<unfinished" in line:
            pending[pid] = opened.group(1)
        result = re.search(r"\) = (\d+)", line)
        if opened and result:
            fds[pid, result.group(1)] = opened.group(1)
        elif "openat resumed" in line and result and pid in pending:
            fds[pid, result.group(1)] = pending.pop(pid)
        fsync = re.search(r"fsync\((\d+)", line)
        if fsync:
            synced.add(fds.get((pid, fsync.group(1)), "?"))
    return synced


@pytest.mark.parametrize("segment", [0.5])
def test_a_kill_mid_take_loses_at_most_the_open_segments(tmp_path, segment):
    """SIGKILL while notes are played in real time: every file on disk is whole, and every note
    that began before the open segments is in one."""
    out = tmp_path / "takes"
    script = textwrap.dedent(f"""
        import sys, time; sys.path[:0] = {sys.path!r}
        from dataclasses import dataclass
        from playbach.device.recorder import Recorder
        @dataclass
        class N:
            pitch: int; velocity: int; on_time: float; off_time: float
        rec = Recorder({str(out)!r}, segment_seconds={segment}, grace=0.2)
        i = 0
        while True:
            now = time.monotonic()
            rec.add(N(40 + i % 40, 90, now - 0.05, now))
            print(now, flush=True)
            i += 1
            time.sleep(0.02)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    time.sleep(4.0)
    proc.send_signal(signal.SIGKILL)
    onsets = [float(line) - 0.05 for line in proc.communicate()[0].split()]
    last = onsets[-1]
    on_disk = 0
    for _, held in read_back(out):   # every file parses: none was half-written
        on_disk += len(held)
    assert on_disk > 0
    # the open segments are the last `segment + grace` seconds; the writer may lag a little
    safe = [t for t in onsets if t < last - (segment + 0.2) - 0.5]
    assert on_disk >= len(safe), (on_disk, len(safe), len(onsets))


def need_root_mounts(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    return mnt


@pytest.fixture
def small_disk(tmp_path):
    mnt = need_root_mounts(tmp_path)
    yield mnt
    subprocess.run(["umount", str(mnt)])


def play_through(rec: Recorder, played: list[N]) -> float:
    """Add every note; the slowest add, in seconds."""
    slowest = 0.0
    for n in played:
        t = time.perf_counter()
        rec.add(n)
        slowest = max(slowest, time.perf_counter() - t)
    return slowest


def test_a_full_disk_is_logged_once_the_music_goes_on_and_it_recovers(small_disk, caplog):
    filler = small_disk / "filler"
    with open(filler, "wb") as f:   # fill it up
        try:
            f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    rec = recorder(small_disk / "takes", 5.0, grace=1.0)
    with caplog.at_level(logging.WARNING, logger="playbach.device.recorder"):
        slowest = play_through(rec, notes(60, start=1000.0))
        deadline = time.monotonic() + 10
        while rec.queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.dropped_failed >= 5 and rec.files_written == 0
        errors = [r for r in caplog.records if "cannot write" in r.message]
        assert len(errors) == 1 and "No space left" in errors[0].message, [r.message for r in caplog.records]
        filler.unlink()   # room again: the next segments are written, and that is said
        play_through(rec, notes(30, start=1060.0))
        rec.close()
    assert rec.files_written >= 5 and any("works again" in r.message for r in caplog.records)
    assert slowest < 0.05, slowest   # the play loop's side never waited on the disk


def test_a_read_only_folder_is_logged_and_the_music_goes_on(small_disk, caplog):
    (small_disk / "takes").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    rec = recorder(small_disk / "takes", 5.0, grace=1.0)
    with caplog.at_level(logging.WARNING, logger="playbach.device.recorder"):
        slowest = play_through(rec, notes(60))
        rec.close()
    assert rec.files_written == 0 and rec.dropped_failed + rec.dropped_slow == 12   # 60 s in 5 s segments
    errors = [r.message for r in caplog.records if "cannot write" in r.message]
    assert len(errors) == 1 and "Read-only file system" in errors[0], errors
    assert slowest < 0.05


def test_the_record_setting_names_a_folder_of_segments_or_one_file_at_the_end(tmp_path):
    from playbach.device.scheduler import Played
    from playbach.device.take_log import TakeLog
    folder_log = TakeLog.for_settings(str(tmp_path / "takes"), "", 90.0, [(2, 6)], 2, 5.0)
    file_log = TakeLog.for_settings(str(tmp_path / "old" / "take.mid"), "", 90.0, [(2, 6)], 2, 5.0)
    assert folder_log.recorder is not None and folder_log.every is None, "a folder keeps no notes in memory"
    assert file_log.recorder is None and file_log.every is not None
    assert TakeLog.for_settings("", "", 90.0, [(2, 6)], 2, 5.0).recorder is None
    assert TakeLog.for_settings(str(tmp_path / "short"), "", 90.0, [(2, 6)], 2, 0.5).recorder.segment_seconds == 30.0
    (tmp_path / "old").mkdir()
    for i, n in enumerate(notes(10)):   # the notes as the scheduler hands them over, a quarter each at 90 BPM
        played = Played(i * 480, n.pitch, 480, n.velocity, n.on_time, n.off_time, 2)
        folder_log.add(played)
        file_log.add(played)
    folder_log.close(str(tmp_path / "takes"), 480, 90.0)
    file_log.close(str(tmp_path / "old" / "take.mid"), 480, 90.0)
    (written,) = (tmp_path / "takes").iterdir()
    assert written.name.startswith("take-") and written.suffix == ".mid" and len(read_midi(written)) == 40
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["take.mid"]
    assert len(read_midi(tmp_path / "old" / "take.mid")) == 40
    for path in (written, tmp_path / "old" / "take.mid"):   # one voice: one track, as ever
        assert heard(path) == ([(2, 6)], [(2, n.pitch) for n in notes(10)], [1])


def heard(path: Path) -> tuple[list, list, list]:
    """A file's Program Changes and note_ons as (channel, value), in file order, and the channels of
    each track that has notes (a DAW's tracks)."""
    import mido

    midi = mido.MidiFile(str(path))
    programs, ons, tracks = [], [], []
    for track in midi.tracks:
        programs += [(m.channel, m.program) for m in track if m.type == "program_change"]
        ons += [(m.channel, m.note) for m in track if m.type == "note_on" and m.velocity > 0]
        tracks += [len({m.channel for m in track if m.type == "note_on"})] if any(m.type == "note_on" for m in track) else []
    return programs, ons, tracks


def test_a_four_voice_take_is_recorded_a_track_per_channel_with_the_programs_sent(tmp_path):
    """voices = four on channels 3..6, programs 52, -1, 52, 32: both recordings hold each note on
    its channel (a unison of two voices too), one track per channel, and the Program Changes the
    output sends (none on the alto's channel)."""
    import mido

    from playbach.device.scheduler import Played
    from playbach.device.take_log import TakeLog
    from playbach.device.voicing import Voicing, program_changes
    from playbach.midifile import read_midi_channels

    voicing = Voicing("four", 1, [3, 4, 5, 6])
    programs = program_changes(voicing, -1, [52, -1, 52, 32])
    chords = [(72, 67, 60, 48), (74, 67, 59, 43), (72, 64, 64, 45)]   # the last: alto and tenor in unison
    played = [Played(4 * k, pitch, 4, 80, 1000.0 + k, 1001.0 + k, channel)
              for k, chord in enumerate(chords) for pitch, channel in zip(chord, voicing.channels)]
    logs = {"file": TakeLog.for_settings(str(tmp_path / "take.mid"), "", 60.0, programs, 0, 5.0),
            "folder": TakeLog.for_settings(str(tmp_path / "takes"), "", 60.0, programs, 0, 5.0)}
    for log in logs.values():
        for note in played:
            log.add(note)
    logs["file"].close(str(tmp_path / "take.mid"), 4, 60.0)
    logs["folder"].close(str(tmp_path / "takes"), 4, 60.0)
    (segment,) = (tmp_path / "takes").iterdir()
    want = sorted((p.channel, p.pitch) for p in played)
    for path in (tmp_path / "take.mid", segment):
        got_programs, ons, tracks = heard(path)
        assert mido.MidiFile(str(path)).type == 1 and tracks == [1, 1, 1, 1], (path, tracks)
        assert got_programs == [(2, 52), (4, 52), (5, 32)]
        assert sorted(ons) == want
        assert sorted((c, p) for _, p, _, _, c in read_midi_channels(path)) == want
        assert [(start, pitch, channel) for start, pitch, _, _, channel in read_midi_channels(path) if start >= 2] == [
            (2.0, 45, 5), (2.0, 64, 3), (2.0, 64, 4), (2.0, 72, 2)]   # the unison is two notes, one per voice


def test_write_midi_puts_each_note_on_its_channel(tmp_path):
    """The one encoder: channels 0..3, a program on each but the second; a channel with a program
    and no note still gets its track (the synth was set); read_midi keeps its 4-tuples."""
    from playbach.events import Note
    from playbach.midifile import read_midi_channels, write_midi

    notes = [Note(2 * i, 60 + i, 2, 70 + i) for i in range(8)]
    write_midi(notes, tmp_path / "four.mid", 4, 100.0, channels=[i % 4 for i in range(8)],
               programs=[(0, 19), (2, 6), (3, 32), (5, 0)])
    programs, ons, tracks = heard(tmp_path / "four.mid")
    assert programs == [(0, 19), (2, 6), (3, 32), (5, 0)] and tracks == [1, 1, 1, 1]
    assert sorted(ons) == sorted((i % 4, 60 + i) for i in range(8))
    assert read_midi_channels(tmp_path / "four.mid") == [(i / 2, 60 + i, 0.5, 70 + i, i % 4) for i in range(8)]
    assert read_midi(tmp_path / "four.mid") == [(i / 2, 60 + i, 0.5, 70 + i) for i in range(8)]
    with pytest.raises(ValueError, match="8 notes but 3 channels"):
        write_midi(notes, tmp_path / "bad.mid", 4, channels=[0, 1, 2])
    assert not (tmp_path / "bad.mid").exists()


def test_a_one_voice_file_is_the_same_bytes_whichever_way_it_is_asked_for(tmp_path):
    """`program` on `channel` (generate, the web page) and the same as channels and programs (the
    take log, the segments) write one type-0 file, byte for byte."""
    import mido

    from playbach.events import Note
    from playbach.midifile import write_midi

    notes = [Note(3 * i, 48 + i % 12, 2 + i % 3, 90) for i in range(40)]
    write_midi(notes, tmp_path / "a.mid", 4, 90.0, 6, 2)
    write_midi(notes, tmp_path / "b.mid", 4, 90.0, channels=[2] * 40, programs=[(2, 6)])
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()
    midi = mido.MidiFile(str(tmp_path / "a.mid"))
    assert midi.type == 0 and len(midi.tracks) == 1
    write_midi(notes, tmp_path / "c.mid", 4, 90.0, -1, 2)
    write_midi(notes, tmp_path / "d.mid", 4, 90.0, channels=[2] * 40, programs=[])
    assert (tmp_path / "c.mid").read_bytes() == (tmp_path / "d.mid").read_bytes()
    assert heard(tmp_path / "c.mid")[0] == []
