"""`playbach play`: the Pi's daemon. Loads a bundle and plays it live to a MIDI port, for hours.

One loop on the monotonic clock, in one thread:

    send what is due  ->  look after the port  ->  control socket  ->  pet the watchdog
    ->  listen to live input
    ->  if less than `lookahead` seconds are generated: one more event (model step + sampling)
    ->  else sleep until the next note is due (in select() on the control socket: a request wakes it)

Generation and the control socket never make a note late: each piece of their work only runs
while the next note is further away than twice the slowest recent piece of that kind.
SIGTERM/SIGINT end every sounding note, close the port and exit 0.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import threading
import time
from contextlib import ExitStack

import numpy as np

from playbach import settings
from playbach.device import config
from playbach.events import Note
from playbach.improviser import STEERING
from playbach.keys import parse_key
from playbach.midifile import write_midi
from playbach.device.clock import open_clock
from playbach.device.midi_io import MidiOutput
from playbach.device.process import process_age, set_realtime
from playbach.device.scheduler import Scheduler
from playbach.device.sdnotify import Notifier
from playbach.errors import UserError
from playbach.files import write_text_atomically

log = logging.getLogger(__name__)

START_DELAY = 0.05   # seconds from "ready" to the first note, so it is not late from the start
MAX_SLEEP = 0.05     # the loop wakes at least this often (signals, port checks, watchdog)
MIN_STEP_BUDGET = 0.002
# what Player.apply() changes in a running take (CC knobs, the control path); the rest needs a restart
LIVE_KEYS = ("bpm", "key") + STEERING


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    if logging.getLogger().level != logging.DEBUG:   # -v wins
        logging.getLogger().setLevel(settings["log_level"].upper())
    return Player(settings).run()


class Player:
    def __init__(self, settings: dict):
        self.s = settings
        self.stop_requested = False
        self.notifier = Notifier()
        self.inference: list[float] = []   # seconds per generated event (kept for --stats only)
        self.step_budget = MIN_STEP_BUDGET  # the slowest recent step: generate only with this much room
        self.notes_played = 0
        self.clock = None                   # MIDI clock followed or sent (device/clock.py); None = our own
        self.panic_requested = threading.Event()   # set by panic(), from any thread; also wakes the loop
        self.control = None                 # the control socket (device/control.py), if any
        self.paused = False                 # paused through the control socket: nothing is generated

    # --- setting up ------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        self.stop_requested = True

    def _on_watchdog(self, _signum, _frame) -> None:
        # systemd's watchdog sends SIGABRT (and SIGCONT, should we be stopped) when the loop has
        # hung: unwind from wherever it hangs, so the ports still close with every note ended
        raise WatchdogAbort("SIGABRT (the watchdog?): the play loop stopped answering")

    def load(self) -> None:
        """The bundle, its model and the Improviser, primed with the seed: a take ready to play
        (steering checked against the bundle); no port yet. bench/steer.py drives it offline."""
        from playbach.bundle import load_bundle
        from playbach.take import make_improviser, open_take_model

        s = self.s
        imports_done = time.monotonic()   # python, numpy and the player's modules are loaded by now
        imports_took = process_age()
        self.bundle = load_bundle(s["bundle"])
        self.model = open_take_model(self.bundle, s)
        self.model.step(np.zeros(4, dtype=np.int64))   # the first invoke is slow: pay it before the clock starts
        self.model.reset()
        # how a start's time splits, for anyone timing a boot (journald stamps the line too)
        log.info("model %s on %s; started in %.2f s: python and imports %.2f s, runtime and model load %.2f s",
                 self.model.name, self.model.backend, process_age(), imports_took, time.monotonic() - imports_done)
        # a pitch range the bundle's vocabulary cannot reach is refused here, before any port opens
        self.improviser = make_improviser(self.bundle, self.model, s)

    def _open(self, ports: ExitStack) -> None:
        s = self.s
        self.load()
        if s["realtime_priority"]:   # only now: loading at SCHED_FIFO starved the rest of a booting Pi
            set_realtime(s["realtime_priority"])
        self.output = ports.enter_context(MidiOutput(s["midi_api"], s["port"], s["virtual_port"],
                                                     s["channel"] - 1, s["program"], s["velocity_scale"],
                                                     s["retry_seconds"]))
        self.live = None
        from playbach.device.control import open_control   # here, so a bad socket path stops the start
        self.control = open_control(self)
        if self.control is not None:
            ports.enter_context(self.control)
        if s["input_port"]:
            from playbach.device.live_input import LiveInput
            knobs = {s[k.cc]: k for k in settings.KNOBS if s[k.cc] >= 0}
            self.live = ports.enter_context(LiveInput(s["midi_api"], s["input_port"],
                                                      self.bundle.codec.ticks_per_quarter, s["live_gap"],
                                                      knobs, s["retry_seconds"]))

    def apply(self, changes: dict[str, object]) -> dict[str, object]:
        """Change settings of the running take, without a gap: each value checked by its setting's
        rules, all or none applied (a UserError naming the key otherwise), from the next generated
        note on (tempo from now: the scheduler re-anchors). Returns the LIVE_KEYS values now in force.
        Call it from the play loop's thread: the loop reads what it changes without a lock."""
        checked = {}
        for name, value in changes.items():
            if name not in LIVE_KEYS:
                what = "cannot change while playing" if name in settings.BY_NAME else "is not a setting"
                raise UserError(f"live: key '{name}' {what}; live keys: {', '.join(LIVE_KEYS)}")
            checked[name] = settings.BY_NAME[name].check(value, "live")
        settings.check_together({**self.in_force(), **checked}, "live")
        steer = {k: v for k, v in checked.items() if k in STEERING}
        if steer and hasattr(self, "improviser"):
            self.improviser.steer(**steer)     # refuses a range the model cannot play, changing nothing
        if "key" in checked and hasattr(self, "improviser"):   # what follows moves there (never refuses)
            self.improviser.set_key(parse_key(checked["key"]))
        self.s.update(checked)
        if "bpm" in checked and hasattr(self, "scheduler"):
            self.scheduler.set_bpm(checked["bpm"], time.monotonic())
        if checked and hasattr(self, "model"):
            log.info("live: %s: %s", " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in checked.items()), self.status())
            self.notifier.status(self.status())
        return self.in_force()

    def in_force(self) -> dict[str, object]:
        """The LIVE_KEYS values the take plays with now."""
        values = {k: self.s[k] for k in LIVE_KEYS}
        if hasattr(self, "scheduler"):
            values["bpm"] = self.scheduler.bpm
        return values

    def status(self) -> str:
        imp, bpm = self.improviser, self.scheduler.bpm if hasattr(self, "scheduler") else self.s["bpm"]
        steering = "".join([f", key {imp.key}" if imp.key is not None else "",
                            f", rhythm temperature {imp.rhythm_temperature:.2f}" if imp.rhythm_temperature >= 0 else "",
                            f", pitches {imp.pitch_min}-{imp.pitch_max}" if imp.range_mask is not None else "",
                            f", density {imp.density:g}/quarter" if imp.density > 0 else ""])
        return f"{self.model.name} on {self.model.backend}, {bpm:g} BPM, temperature {imp.temperature:.2f}{steering}"

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGABRT, self._on_watchdog)
        try:
            code = self._play()
        except WatchdogAbort as e:   # hung before the loop began: the ports are closed all the same
            log.error("%s", e)
            return 1
        if code is not None:
            self._finish(started)
        return code or 0

    def _play(self) -> int | None:
        """Open, wait for the port, play until told to stop; None if stopped before playing.
        The ports close on every way out of here, their final note_offs delivered first."""
        with ExitStack() as ports:
            self._open(ports)
            # what is loaded lives for the whole take: out of the cyclic collector's full passes,
            # which the control socket's garbage triggers mid-loop (3 ms each here, more on a Pi)
            gc.freeze()
            self.clock = open_clock(self.s, self.output, ports)
            keep = bool(self.s["record"] or self.s["stats"])
            # made before the port is there: a Pi powered on before its synth answers its control
            # socket (status, settings) while it waits, and what was set then is the take's
            self.scheduler = Scheduler(self.bundle.codec.ticks_per_quarter, self.s["bpm"],
                                       time.monotonic() + START_DELAY, keep_played=keep)
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
        s, sched, out = self.s, self.scheduler, self.output
        end = self.play_start + s["seconds"] if s["seconds"] > 0 else float("inf")
        listening = False
        while not self.stop_requested:
            now = time.monotonic()
            if now >= end:
                break
            if self.panic_requested.is_set():
                self._panic(now)
            if self.clock is not None:   # before the notes: a tick due now leaves first
                self.clock.poll(now, sched, out)
                if not self.clock.playing and not self.notifier.ready_sent:
                    self.notifier.ready(f"{self.status()}, waiting for MIDI clock")
            due = sched.pop_due(now)
            if due:
                out.send(due)
                self.notes_played += sum(kind == "note_on" for kind, _, _ in due)
            out.poll(now)
            if self.control is not None:   # only the pieces that fit before the next note
                self.control.serve(now, self._deadline(now))
            self.notifier.watchdog(now)
            if self.live is not None:
                listening = self._live(now)
            if not listening and self._room_to_generate(now):
                self._generate()
                continue
            wake = min(now + MAX_SLEEP, end)
            if self._generating():   # else the generation wake is in the past: the loop would spin
                wake = min(wake, sched.time_of(sched.cursor) - s["lookahead"])
            next_due = sched.next_due()
            if next_due is not None:
                wake = min(wake, next_due)
            if self.clock is not None:
                wake = min(wake, self.clock.next_wake(now))
            delay = wake - time.monotonic()
            if delay > 0:
                self._wait(delay, now)

    def _wait(self, delay: float, now: float) -> None:
        """Sleep until the loop's next wake: in the control socket's select() while a request could
        be answered before the next note (a client then wakes us), else unwoken by clients."""
        if self.control is not None and self.control.room(time.monotonic(), self._deadline(now)):
            self.control.wait(delay)
        else:
            self.panic_requested.wait(delay)

    def _deadline(self, now: float) -> float | None:
        """When the next thing that must leave on time is due: a note, or a clock tick we send."""
        due = self.scheduler.next_due()
        if self.clock is not None and not self.clock.follows:
            due = min(due if due is not None else float("inf"), self.clock.next_wake(now))
        return due

    def _generating(self) -> bool:
        """False while paused, or following a clock that is stopped: nothing is generated."""
        return not self.paused and (self.clock is None or self.clock.playing)

    def _room_to_generate(self, now: float) -> bool:
        if not self._generating():
            return False
        lead = self.scheduler.lead(now)
        if lead >= self.s["lookahead"]:
            return False
        due = self._deadline(now)
        # a step right now could make the next note late, unless we are about to run dry
        return due is None or due - now > 2 * self.step_budget or lead < self.s["lookahead"] / 4

    def _generate(self) -> None:
        t = time.perf_counter()
        onset, pitch, duration, velocity = self.improviser.next_event().tolist()
        took = time.perf_counter() - t
        # the slowest recent step (one stall under load should not slow generation for good)
        self.step_budget = max(took, 0.99 * self.step_budget, MIN_STEP_BUDGET)
        if self.s["stats"]:
            self.inference.append(took)
        self.scheduler.add(onset, pitch, duration, velocity)
        if not self.notifier.ready_sent:
            self.notifier.ready(self.status())
            log.info("playing: %s", self.status())

    def _live(self, now: float) -> bool:
        """Apply live input; True while someone is playing (the model keeps quiet)."""
        news = self.live.poll(now, self.scheduler.bpm)
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
            self.improviser.listen(news.phrase)
            self.scheduler.clear_future(now)
            self.scheduler.restart_at(now + START_DELAY)
        return news.playing

    def panic(self) -> None:
        """End every sounding note at once (CC 120/123 on the input, or the control path); the
        music goes on after a short gap. Safe from any thread: the loop does it on the pass this wakes."""
        self.panic_requested.set()
        if self.control is not None:
            self.control.wake()   # the loop may be waiting in the control socket's select()

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
        now = self.stopped_at
        played = sorted(self.scheduler.played, key=lambda p: (p.on_time, p.pitch))
        log.info("stopped after %.1f s, %d notes played", now - self.play_start, self.notes_played)
        if self.s["record"]:
            notes = [Note(p.start_tick, p.pitch, p.duration, p.velocity) for p in played]
            write_midi(notes, self.s["record"], self.bundle.codec.ticks_per_quarter, self.s["bpm"],
                       max(self.s["program"], 0), self.s["channel"] - 1)
            log.info("recorded %d notes to %s", len(notes), self.s["record"])
        if self.s["stats"]:
            write_text_atomically(self.s["stats"], json.dumps({
                "process_start": started, "play_start": self.play_start, "stop": now,
                "model": self.model.name, "backend": self.model.backend, "bpm": self.s["bpm"],
                "inference_seconds": self.inference,
                "note_ons": [[p.on_time, p.pitch] for p in played], "note_ticks": [p.start_tick for p in played],
                **(self.clock.stats() if self.clock is not None else {})}))


class WatchdogAbort(Exception):
    """The play loop was interrupted by SIGABRT, which systemd's watchdog sends."""
