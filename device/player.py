"""`playbach play`: the Pi's daemon. Loads a bundle and plays it live to a MIDI port, for hours.

One loop on the monotonic clock, in one thread:

    send what is due  ->  look after the port  ->  pet the watchdog  ->  listen to live input
    ->  if less than `lookahead` seconds are generated: one more event (model step + sampling)
    ->  else sleep until the next note is due

Generation never makes a note late: it only runs while the next note is further away than
twice the slowest recent model step. SIGTERM/SIGINT end every sounding note, close the port and exit 0.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from contextlib import ExitStack

import numpy as np

from playbach.device import config
from playbach.events import Note
from playbach.improviser import Improviser, choose_opening, midi_seed
from playbach.memory import RepeatMemory
from playbach.midifile import write_midi
from playbach.device.midi_io import MidiOutput
from playbach.device.scheduler import Scheduler
from playbach.device.sdnotify import Notifier
from playbach.errors import UserError
from playbach.files import write_text_atomically

log = logging.getLogger(__name__)

START_DELAY = 0.05   # seconds from "ready" to the first note, so it is not late from the start
MAX_SLEEP = 0.05     # the loop wakes at least this often (signals, port checks, watchdog)
MIN_STEP_BUDGET = 0.002


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

    # --- setting up ------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        self.stop_requested = True

    def _on_watchdog(self, _signum, _frame) -> None:
        # systemd's watchdog sends SIGABRT (and SIGCONT, should we be stopped) when the loop has
        # hung: unwind from wherever it hangs, so the ports still close with every note ended
        raise WatchdogAbort("SIGABRT (the watchdog?): the play loop stopped answering")

    def _open(self, ports: ExitStack) -> None:
        from playbach.bundle import load_bundle
        from playbach.runtime import open_model

        s = self.s
        imports_done = time.monotonic()   # python, numpy and the player's modules are loaded by now
        imports_took = process_age()
        self.bundle = load_bundle(s["bundle"])
        try:
            self.model = open_model(self.bundle, s["accelerator"], s["model_kind"], s["variant"])
        except UserError as e:
            if s["model_kind"] != "step":
                raise
            # the shipped bundle's windowed model need not be the step model's variant
            have = self.bundle.variants("windowed")
            variant = s["variant"] if s["variant"] in have else self.bundle.most_faithful_variant("windowed")
            log.warning("%s; falling back to the windowed %s model", e, variant)
            self.model = open_model(self.bundle, s["accelerator"], "windowed", variant)
        self.model.step(np.zeros(4, dtype=np.int64))   # the first invoke is slow: pay it before the clock starts
        self.model.reset()
        # how a start's time splits, for anyone timing a boot (journald stamps the line too)
        log.info("model %s on %s; started in %.2f s: python and imports %.2f s, runtime and model load %.2f s",
                 self.model.name, self.model.backend, process_age(), imports_took, time.monotonic() - imports_done)
        rng = np.random.default_rng(None if s["seed"] < 0 else s["seed"])
        memory = RepeatMemory(self.bundle.memory if s["max_repeat"] else None, s["max_repeat"])
        if s["max_repeat"] and self.bundle.memory is None:
            log.info("the bundle has no repeat-memory weights: the model plays alone")
        self.improviser = Improviser(self.model, self.bundle.codec, rng, s["temperature"], s["top_k"], memory)
        if s["seed_midi"]:
            seed, origin = midi_seed(s["seed_midi"], self.bundle.codec), s["seed_midi"]
        else:
            origin, seed = choose_opening(self.bundle.openings, self.bundle.opening_names, s["opening"], rng,
                                          str(self.bundle.path))
        log.info("starting from %s (%d events)", origin, len(seed))
        self.improviser.prime(seed)
        self.output = ports.enter_context(MidiOutput(s["midi_api"], s["port"], s["virtual_port"],
                                                     s["channel"] - 1, s["program"], s["velocity_scale"],
                                                     s["retry_seconds"]))
        self.live = None
        if s["input_port"]:
            from playbach.device.live_input import LiveInput
            self.live = ports.enter_context(LiveInput(s["midi_api"], s["input_port"],
                                                      self.bundle.codec.ticks_per_quarter, s["live_gap"],
                                                      s["cc_temperature"], s["cc_tempo"], s["retry_seconds"]))

    def status(self) -> str:
        return (f"{self.model.name} on {self.model.backend}, {self.scheduler.bpm:g} BPM, "
                f"temperature {self.improviser.temperature:.2f}")

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGABRT, self._on_watchdog)
        if self.s["realtime_priority"]:
            set_realtime(self.s["realtime_priority"])
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
            if not self.output.wait(lambda: self.stop_requested,
                                    lambda: self.notifier.watchdog(time.monotonic())):
                return None
            keep = bool(self.s["record"] or self.s["stats"])
            self.scheduler = Scheduler(self.bundle.codec.ticks_per_quarter, self.s["bpm"],
                                       time.monotonic() + START_DELAY, keep_played=keep)
            self.play_start = self.scheduler.origin_time
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
                self.output.send(self.scheduler.stop(self.stopped_at))
            return code

    def _loop(self) -> None:
        s, sched, out = self.s, self.scheduler, self.output
        end = self.play_start + s["seconds"] if s["seconds"] > 0 else float("inf")
        listening = False
        while not self.stop_requested:
            now = time.monotonic()
            if now >= end:
                break
            due = sched.pop_due(now)
            if due:
                out.send(due)
                self.notes_played += sum(kind == "note_on" for kind, _, _ in due)
            out.poll(now)
            self.notifier.watchdog(now)
            if self.live is not None:
                listening = self._live(now)
            if not listening and self._room_to_generate(now):
                self._generate()
                continue
            wake = min(now + MAX_SLEEP, end, sched.time_of(sched.cursor) - s["lookahead"])
            next_due = sched.next_due()
            if next_due is not None:
                wake = min(wake, next_due)
            delay = wake - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _room_to_generate(self, now: float) -> bool:
        lead = self.scheduler.lead(now)
        if lead >= self.s["lookahead"]:
            return False
        due = self.scheduler.next_due()
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
        if news.temperature is not None:
            self.improviser.temperature = news.temperature
        if news.bpm is not None:
            self.scheduler.set_bpm(news.bpm, now)
        if news.temperature is not None or news.bpm is not None:
            log.info("live: %s", self.status())
            self.notifier.status(self.status())
        if news.playing:
            self.scheduler.clear_future(now)
        if news.phrase is not None and len(news.phrase):
            log.info("live: answering a phrase of %d notes", len(news.phrase))
            self.improviser.listen(news.phrase)
            self.scheduler.clear_future(now)
            self.scheduler.restart_at(now + START_DELAY)
        return news.playing

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
            write_json(self.s["stats"], {
                "process_start": started, "play_start": self.play_start, "stop": now,
                "model": self.model.name, "backend": self.model.backend, "bpm": self.s["bpm"],
                "inference_seconds": self.inference,
                "note_ons": [[p.on_time, p.pitch] for p in played]})


class WatchdogAbort(Exception):
    """The play loop was interrupted by SIGABRT, which systemd's watchdog sends."""


def process_age() -> float:
    """Seconds since this process started (Linux: its start time in /proc, on the boot clock)."""
    try:
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


def set_realtime(priority: int) -> None:
    """SCHED_FIFO for this process, so a busy machine doesn't make notes late; fine to be refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        log.info("realtime scheduling at priority %d", priority)
    except (PermissionError, OSError, AttributeError) as e:
        log.warning("realtime priority %d refused (%s); playing with normal scheduling", priority, e)


def write_json(path: str, data: dict) -> None:
    write_text_atomically(path, json.dumps(data))
