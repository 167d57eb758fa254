"""`playbach play`: the Pi's daemon. Plays a Take (playbach/take.py) live to a MIDI port, for hours.

One loop on the monotonic clock, in one thread:

    send what is due (clock ticks first, then notes)  ->  look after the port  ->  control socket
    ->  pet the watchdog  ->  listen to live input
    ->  if less than `lookahead` seconds are generated: one more event (model step + sampling)
    ->  else sleep until the next note or tick is due (in select() on the control socket: a
        request wakes it)

Generation (device/pacing.py) and the control socket never make a note or a sent clock tick late.
The Player owns the loop, the ports, the clock and the signals; the take is swapped whole on a
restart; what was played is the take log's. SIGTERM/SIGINT end every note, close the ports, exit 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import signal
import threading
import time
from contextlib import ExitStack
from typing import Any, Mapping

from playbach import overrides, settings as pb_settings
from playbach.device import config, signals
from playbach.device.clock import open_clock
from playbach.device.control import open_control
from playbach.device.control_ops import PlayerState
from playbach.device.midi_io import MidiOutput
from playbach.device.pacing import Pacer
from playbach.device.process import normal_priority, set_realtime
from playbach.device.scheduler import START_DELAY, Scheduler, Upcoming
from playbach.device.sdnotify import Notifier
from playbach.device.signals import WatchdogAbort
from playbach.device.take_log import TakeLog
from playbach.device.voicing import Thru, Voicing, program_changes
from playbach.errors import UserError
from playbach.settings import Settings
from playbach.take import Take

log = logging.getLogger(__name__)

MAX_SLEEP = 0.05     # the loop wakes at least this often (signals, port checks, watchdog)


add_arguments = config.add_arguments


def run(args: argparse.Namespace) -> int:
    base = config.load(args)   # defaults < config < flags: what a reset from the page goes back to
    if logging.getLogger().level != logging.DEBUG:   # -v wins
        logging.getLogger().setLevel(base.log_level.upper())
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGABRT):   # while loading: nothing is open yet
        signal.signal(signum, signals.stop_loading)
    s, kept = overrides.at_start(base, pb_settings.check_arguments(args))
    return Player(overrides.build(config.load_take, s, base), base, kept).run()


class Player:
    """The loop, the ports, the clock and the signals around one Take at a time; the control
    socket reaches it through device/control_ops.Controlled."""

    def __init__(self, take: Take, config_settings: Settings | None = None,
                 kept: overrides.KeptChanges | None = None):
        s = take.settings
        self.take = take
        self.config_settings = config_settings or s   # defaults < config < flags, for reset()
        self.kept = kept                               # the live changes that outlast this run
        self.stop_requested = False
        self.paused = False                 # paused through the control socket: nothing is generated
        self.notifier = Notifier()
        self.pacer = Pacer(keep_times=bool(s.stats))
        self.panic_requested = threading.Event()   # set by panic(), from any thread; also wakes the loop
        self.voicing = Voicing(s.voices, s.channel, s.channels)   # each note's channel, as generated
        self.programs = program_changes(self.voicing, s.program, s.programs)   # sent on each connect, and recorded
        self.take_log = TakeLog.for_settings(s.record, s.stats, s.bpm, self.programs, s.channel - 1,
                                             s.record_minutes)
        # made before the port is there: a Pi powered on before its synth answers its control
        # socket (status, settings) while it waits, and what was set then is the take's
        self.scheduler = Scheduler(take.ticks_per_quarter, s.bpm, time.monotonic() + START_DELAY,
                                   self.take_log.add)
        self.play_start = self.stopped_at = 0.0
        self.ports = ExitStack()   # closed on every way out of _play, their final note_offs delivered first
        try:
            if s.realtime_priority:   # only now: loading at SCHED_FIFO starved the rest of a booting Pi
                set_realtime(s.realtime_priority)
            self.thru = Thru() if s.thru and s.input_port else None
            self.output = self.ports.enter_context(MidiOutput(
                s.midi_api, s.port, s.virtual_port, s.channel - 1, s.program, s.velocity_scale, s.retry_seconds,
                self.voicing.used(), self.programs,
                self.thru.note_sent if self.thru is not None else None))
            self.control = open_control(s.control_socket, s.control_group, self)   # a bad path stops the start
            if self.control is not None:
                self.ports.enter_context(self.control)
            self.live = self._open_live(s)
            self.clock = open_clock(s, self.output, self.ports)
        except BaseException:
            self.ports.close()
            raise

    def _open_live(self, s: Settings):
        if not s.input_port:
            return None
        from playbach.device.live_input import LiveInput
        knobs = {getattr(s, k.cc): k for k in pb_settings.KNOBS if getattr(s, k.cc) >= 0}
        return self.ports.enter_context(LiveInput(s.midi_api, s.input_port, self.take.ticks_per_quarter,
                                                  s.live_gap, knobs, s.retry_seconds, self.thru))

    # --- what the control socket may do (device/control_ops.Controlled) -------------------------
    def apply(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change settings of the running take, without a gap: all or none (a UserError naming
        the key), from the next generated note on (tempo from now: the scheduler re-anchors).
        Returns the live values now in force. Call it from the play loop's thread."""
        now = self.take.apply(changes)   # all applied, or a UserError and none
        if "bpm" in changes:
            self.scheduler.set_bpm(now["bpm"], time.monotonic())
        if changes:
            if self.kept is not None:   # written from the loop (_serve), at most once a second
                self.kept.note({k: now[k] for k in changes})
            log.info("live: %s: %s", " ".join(f"{k}={now[k]:g}" if isinstance(now[k], float) else f"{k}={now[k]}"
                                              for k in changes), self.status())
            self.notifier.status(self.status())
        return self.in_force()

    def reset(self) -> dict[str, Any]:
        """Forget the kept live changes (their file removed) and play the config's values live."""
        in_force = self.in_force()
        back = {k: getattr(self.config_settings, k) for k in pb_settings.LIVE}
        now = self.apply({k: v for k, v in back.items() if v != in_force[k]})
        if self.kept is not None:
            self.kept.reset()
        log.info("control: reset to the config")
        return now

    def in_force(self) -> dict[str, Any]:
        """The live values the take plays with now (the tempo: the scheduler's, which a followed clock sets)."""
        return {**self.take.in_force(), "bpm": self.scheduler.bpm}

    def state(self) -> PlayerState:
        return PlayerState(dataclasses.replace(self.take.settings, bpm=self.scheduler.bpm), self.paused,
                           self.output.connected, self.take.model.name, self.take.model.backend,
                           tuple(self.take.bundle.opening_names), self.status())

    def upcoming(self) -> list[Upcoming]:
        return self.scheduler.upcoming() if self._clock_running() else []   # notes made ready are not due

    def _clock_running(self) -> bool:
        """False while a followed clock is stopped: notes are made ready, none is due."""
        return self.clock is None or self.clock.playing

    def status(self) -> str:
        return self.take.status(self.scheduler.bpm)

    def pause(self, now: float) -> None:
        if not self.paused:
            self.paused = True   # the loop generates nothing while paused (_generating)
            self.output.send(self.scheduler.stop(now))
            log.info("control: paused")

    def resume(self, now: float) -> None:
        if self.paused:
            self.scheduler.restart_at(now + START_DELAY)
            self.paused = False
            log.info("control: playing")

    def restart(self, bundle: str | None, opening: str | None) -> None:
        """A new take, built whole while the old one is silent and swapped in when ready: another
        installed bundle (its folder, looked up by device/control_ops.py) and/or opening; live changes made
        so far carry over. If it cannot be made, the old take plays on (a UserError)."""
        s = self.take.settings
        if bundle is not None:
            s = dataclasses.replace(s, bundle=bundle)
        if opening is not None:
            s = dataclasses.replace(s, opening=opening, seed_midi="")
        self.output.send(self.scheduler.stop(time.monotonic()))
        try:
            with normal_priority():   # a second or so without notes, not at SCHED_FIFO
                take = Take.build(s)
        except Exception as e:   # a broken bundle or a wrong opening
            self.scheduler.restart_at(time.monotonic() + START_DELAY)
            raise UserError(f"restart: {e}") from e
        self.take = take
        self.voicing.reset()
        self.scheduler.restart_at(time.monotonic() + START_DELAY, take.ticks_per_quarter)
        if self.live is not None:
            self.live.regrid(take.ticks_per_quarter)
        log.info("control: restarted with %s", self.status())

    def panic(self) -> None:
        """End every sounding note at once (CC 120/123 on the input, or the control path); the
        music goes on after a short gap. Safe from any thread: the loop does it on the pass this wakes."""
        self.panic_requested.set()
        if self.control is not None:
            self.control.wake()   # the loop may be waiting in the control socket's select()

    # --- the loop ----------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        self.stop_requested = True

    def run(self) -> int:
        started = time.monotonic()
        signals.answer(self._on_signal)
        try:
            code = self._play()
        except WatchdogAbort as e:   # hung before the loop began: the ports are closed all the same
            log.error("%s", e)
            return 1
        finally:
            if self.kept is not None:
                self.kept.close()   # what changed in the last second too
        if code is not None:
            self._finish(started)
        return code or 0

    def _play(self) -> int | None:
        """Wait for the port, play until told to stop; None if stopped before playing.
        The ports close on every way out of here, their final note_offs delivered first."""
        with self.ports:
            # what is loaded lives for the whole take: out of the cyclic collector's full passes,
            # which the control socket's garbage triggers mid-loop (a few ms each)
            gc.freeze()
            if not self.output.wait(lambda: self.stop_requested, self._waiting_for_port):
                return None
            self.scheduler.restart_at(time.monotonic() + START_DELAY)
            self.play_start = self.scheduler.origin_time
            if self.clock is not None:
                self.clock.begin(self.scheduler)
            code = 0
            try:
                self._loop()
            except WatchdogAbort as e:
                log.error("%s", e)
                code = 1
            except Exception:  # logged, and a non-zero exit so systemd restarts us
                log.exception("the play loop failed")
                code = 1
            finally:
                self.notifier.stopping()
                self.stopped_at = time.monotonic()
                if self.clock is not None:
                    self.clock.end()
                self.output.send(self.scheduler.stop(self.stopped_at))
            return code

    def _waiting_for_port(self) -> None:
        """While the output port is not there: keep the watchdog fed and answer the control socket."""
        now = time.monotonic()
        self.notifier.watchdog(now)
        if self.control is not None:
            self.control.serve(now, None)

    def _loop(self) -> None:
        seconds = self.take.settings.seconds
        end = self.play_start + seconds if seconds > 0 else float("inf")
        while not self.stop_requested:
            now = time.monotonic()
            if now >= end:
                break
            self._send_due(now)
            listening = self._serve(now)
            if not listening and self._room_to_generate(now):
                self._generate(now)
                continue
            delay = self._next_wake(now, end) - time.monotonic()
            if delay > 0:
                self._wait(delay, now)

    def _send_due(self, now: float) -> None:
        """Panic, clock ticks, then the notes due by `now`."""
        if self.panic_requested.is_set():
            self._panic(now)
        if self.clock is not None:   # before the notes: a tick due now leaves first
            self.clock.poll(now, self.scheduler, self.output)
            if not self._clock_running() and not self.notifier.ready_sent:
                self.notifier.ready(f"{self.status()}, waiting for MIDI clock")
        due = self.scheduler.pop_due(now)
        if due:
            self.output.send(due)
            self.take_log.sent(sum(message[0] == "note_on" for message in due), time.monotonic())

    def _serve(self, now: float) -> bool:
        """The port, the control socket, the watchdog and live input; True while someone plays."""
        self.output.poll(now)
        if self.control is not None:   # only the pieces that fit before the next note or tick
            self.control.serve(now, self._deadline(now))
        self.notifier.watchdog(now)
        self.take_log.poll(now, self.scheduler.bpm)
        if self.kept is not None:
            self.kept.flush(now)
        return self._live(now) if self.live is not None else False

    def _next_wake(self, now: float, end: float) -> float:
        wake = min(now + MAX_SLEEP, end)
        # paused, the generation wake is in the past: the loop would spin; while a stopped clock
        # holds the ready notes a fixed lead ahead it never comes nearer (its poll wakes the loop)
        if self._generating() and self._clock_running():
            wake = min(wake, self.scheduler.time_of(self.scheduler.cursor) - self.take.settings.lookahead)
        next_due = self.scheduler.next_due()
        if next_due is not None:
            wake = min(wake, next_due)
        if self.clock is not None:
            wake = min(wake, self.clock.next_wake(now))
        return wake

    def _wait(self, delay: float, now: float) -> None:
        """Sleep until the loop's next wake: in the control socket's select() while a request could
        be answered before the next note (a client then wakes us), else unwoken by clients."""
        if self.control is not None and self.control.room(time.monotonic(), self._deadline(now)):
            self.control.wait(delay)
        else:
            self.panic_requested.wait(delay)

    def _deadline(self, now: float) -> float | None:
        """When the next thing that must leave on time is due: a note, or a clock tick we send."""
        if not self._clock_running():
            return None
        due = self.scheduler.next_due()
        if self.clock is not None and not self.clock.follows:
            due = min(due if due is not None else float("inf"), self.clock.next_wake(now))
        return due

    def _generating(self) -> bool:
        """False while paused: nothing is generated (a followed clock that is stopped still has the
        first notes made ready)."""
        return not self.paused

    def _room_to_generate(self, now: float) -> bool:
        return self._generating() and self.pacer.room(now, self.scheduler.lead(now), self.take.settings.lookahead,
                                                      self._deadline(now))

    def _generate(self, now: float) -> None:
        """One more event, or a share of a planned beat (device/pacing.py)."""
        event = self.pacer.generate(self.take.next_event, lambda: self.take.improviser.longest_piece,
                                    self._deadline(now))
        if event is None:
            return
        self.scheduler.add(*event, self.voicing.channel_of(*event[:3]))
        if not self.notifier.ready_sent:
            self.notifier.ready(self.status())
            log.info("playing: %s", self.status())

    def _live(self, now: float) -> bool:
        """Apply live input; True while someone is playing (the model keeps quiet)."""
        news = self.live.poll(now, self.scheduler.bpm)
        for data in news.thru:   # the keyboard's own messages, as a sound module passes them on
            self.output.send_raw(data)
        if news.changes:
            try:
                self.apply(news.changes)
            except UserError as e:   # e.g. the pitch_min knob turned above pitch_max: keep playing
                log.warning("%s", e)
        if news.panic:
            self._panic(now)
        if news.playing:
            self.scheduler.clear_future(now)
        if news.phrase is not None and len(news.phrase):
            log.info("live: answering a phrase of %d notes", len(news.phrase))
            self.take.improviser.listen(news.phrase)
            self.scheduler.clear_future(now)
            self.scheduler.restart_at(now + START_DELAY)
        return news.playing

    def _panic(self, now: float) -> None:
        self.panic_requested.clear()
        self.output.send(self.scheduler.stop(now))
        self.output.all_notes_off()
        if self.clock is None or not self.clock.follows:
            self.scheduler.restart_at(now + START_DELAY)   # a followed clock places the next note itself
        log.warning("panic: every sounding note ended")

    # --- stopping ------------------------------------------------------------------------------
    def _finish(self, started: float) -> None:
        """After the ports closed: say what was played, write the recording and the stats."""
        s = self.take.settings
        log.info("stopped after %.1f s, %d notes played", self.stopped_at - self.play_start, self.take_log.notes_played)
        self.take_log.close(s.record, self.take.ticks_per_quarter, s.bpm)
        if s.stats:
            self.take_log.write_stats(s.stats, process_start=started, play_start=self.play_start, stop=self.stopped_at,
                                      model=self.take.model.name, backend=self.take.model.backend, bpm=s.bpm,
                                      inference_seconds=self.pacer.inference,
                                      **(self.clock.stats() if self.clock is not None else {}))
