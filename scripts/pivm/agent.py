"""pi-vm's in-guest agent: the person who plugs the synth in, pulls cables and breaks things.

Started at boot by pivm-agent.service (test image only; ordered before playbach.service so
that at shutdown it stops *after* the player and hears its last note_offs). It plugs the USB
MIDI synth in at once, as a synth that is connected at power-on, records what the synth
receives (recorder.py), runs the checks of issue 10 one after another, each bounded in time,
and reports on the serial console. The reboot check needs two boots: /var/lib/pivm/phase says
which one this is, and results.json carries the figures across. The second boot ends with
`systemctl poweroff`, which ends qemu.
"""
from __future__ import annotations

import os
import random
import re
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gadget import MidiGadget, usb_device_node            # noqa: E402
from guest import (STATE, UNIT, Console, active_state, first_message, first_port_line,  # noqa: E402
                   journal, load_results, main_pid, mono_prop, run, save_results, show, wait_for)
from recorder import Recorder, balance                    # noqa: E402
import lasting                                            # noqa: E402
from lasting import NOTE_TIMEOUT                          # noqa: E402

PHASE = STATE / "phase"
CHECKS = Path("/opt/pivm/checks")   # written by the driver: "all", or the names to run (pi-vm.sh --checks)
CONFIG = Path("/etc/playbach/config.toml")
# pid.codes' test VID/PID; the product string becomes the ALSA card and sequencer client name
SYNTH = MidiGadget("synth", 0x1209, 0x0001, "PiVM Synth", "PiVMGadget")
CORAL = (0x1a6e, 0x089a)
UDEV_TIMEOUT = 180       # s for udev to handle a plug: its queue, TCG-slow, can hold a minute of work
UNPLUG_CYCLES = 20
SEED = 10                # the unplug points are random, but the same in every run


class Agent:
    def __init__(self) -> None:
        self.console = Console()
        self.results = load_results()
        phase = PHASE.read_text().strip() if PHASE.exists() else ""
        self.boot = {"boot2": 2, "boot3": 3}.get(phase, 1)
        self.recorder = Recorder(SYNTH.card_id, STATE / "midi.log", self.boot)
        self.rng = random.Random(SEED + self.boot)
        self.stopping = False
        names = CHECKS.read_text().split() if CHECKS.exists() else ["all"]
        self.only = None if names in ([], ["all"]) else set(",".join(names).split(","))

    # --- bookkeeping -----------------------------------------------------------------------
    def wanted(self, name: str) -> bool:
        return self.only is None or name == "boot" or name in self.only

    def check(self, name: str, func) -> dict:
        """Run one check; its figures and pass/fail go to results.json and the console."""
        if not self.wanted(name):
            return {"ok": None}
        self.console.mark("check-start", check=name)
        start = time.monotonic()
        try:
            figures = func()
        except Exception as e:  # a broken check is a failed check, reported, not a dead agent
            (STATE / "agent-errors.txt").open("a").write(f"{name}:\n{traceback.format_exc()}\n")
            figures = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        figures["seconds"] = round(time.monotonic() - start, 1)
        self.results["checks"][name] = figures
        save_results(self.results)
        self.console.mark("check", check=name, **figures)
        return figures

    def wait_note(self, after: float, timeout: float = NOTE_TIMEOUT) -> float | None:
        return self.recorder.wait_note_after(after, timeout)

    def playing(self, seconds: float) -> None:
        """Let the music go on for a while (and make sure it does)."""
        self.wait_note(time.monotonic() - 1, NOTE_TIMEOUT)
        time.sleep(seconds)

    # --- boot 1 ----------------------------------------------------------------------------
    def boot_check(self) -> dict:
        """Power-on to first note, and how that time splits."""
        note = self.wait_note(0.0)
        wait_for(lambda: active_state() == "active", 60)
        m = show("", "KernelTimestampMonotonic", "InitRDTimestampMonotonic", "UserspaceTimestampMonotonic",
                 "FinishTimestampMonotonic")
        wait_for(lambda: show("", "FinishTimestampMonotonic").get("FinishTimestampMonotonic", "0") != "0", 60)
        entries = journal("-u", UNIT, "-b")
        start = mono_prop(UNIT, "ExecMainStartTimestampMonotonic") or 0.0
        model = first_message(entries, "started in", start) or first_message(entries, "player: model ", start)
        port = first_port_line(entries, start)
        # the player's own account of its start ("started in ...": imports, then the model load);
        # without it, its first log line is taken as the end of its imports
        told = model and re.search(r"python and imports ([\d.]+) s, runtime and model load ([\d.]+) s", model[1])
        imports = (model[0] - float(told.group(2)), "") if told else first_message(entries, "", start)
        figures = {
            "first_note_mono": note,
            "ready_mono": mono_prop(UNIT, "ActiveEnterTimestampMonotonic"),
            "userspace_start_mono": int(m.get("UserspaceTimestampMonotonic", 0)) / 1e6,
            "systemd_finish_mono": int(show("", "FinishTimestampMonotonic")["FinishTimestampMonotonic"]) / 1e6,
            "playbach_exec_mono": start,
            "imports_done_mono": imports and imports[0],
            "model_loaded_mono": model and model[0],
            "port_opened_mono": port and port[0],
            "port_line": port and port[1],
            "player_says_imports_s": told and float(told.group(1)),
            "player_says_model_load_s": told and float(told.group(2)),
            "systemd_analyze": run("systemd-analyze", "time").stdout.strip(),
            "sequencer_clients": run("aconnect", "-o").stdout,
        }
        # what `port = ""` (the shipped default) would pick: the first client that is not Through
        clients = re.findall(r"client \d+: '([^']*)'", figures["sequencer_clients"])
        figures["first_port_default_would_pick"] = next((c for c in clients if "through" not in c.lower()), None)
        figures["ok"] = note is not None and figures["ready_mono"] is not None
        return figures

    def stop_check(self) -> dict:
        """`systemctl stop playbach` ends every sounding note at the synth."""
        self.playing(8)
        t = time.monotonic()
        stopped = run("systemctl", "stop", UNIT, timeout=120).returncode == 0
        stop_s = time.monotonic() - t
        time.sleep(1.0)                          # the last USB transfers
        left = balance(self.recorder.snapshot()).stuck()
        run("systemctl", "start", "--no-block", UNIT)
        t2 = time.monotonic()
        note = self.wait_note(t2)
        return {"ok": stopped and not left and note is not None, "stop_s": round(stop_s, 2),
                "sounding_after_stop": left, "start_to_note_s": note and round(note - t2, 2)}

    def kill_check(self, sig: int) -> dict:
        """kill -9 (restart) or kill -STOP (watchdog): systemd must bring the music back."""
        self.playing(4)
        pid = main_pid()
        t = time.monotonic()
        os.kill(pid, sig)
        timeout = NOTE_TIMEOUT + (40 if sig == signal.SIGSTOP else 0)
        # the music is back when the new process plays: a note the old one sent before the
        # signal may still reach the synth after it (USB), and is not the restart's
        replaced = wait_for(lambda: main_pid() not in (0, pid), timeout, 0.2)
        note = self.wait_note(time.monotonic(), timeout) if replaced else None
        figures = {"pid": pid, "new_pid": main_pid(), "to_note_s": note and round(note - t, 2),
                   "nrestarts": int(show(UNIT).get("NRestarts", 0))}
        if sig == signal.SIGSTOP:
            wd = first_message(journal("-u", UNIT, "-b"), "Watchdog timeout", t - 1)
            figures["watchdog_logged"] = bool(wd)
            figures["watchdog_after_s"] = wd and round(wd[0] - t, 2)
        figures["ok"] = note is not None and figures["new_pid"] != pid
        if sig == signal.SIGSTOP:
            figures["ok"] = figures["ok"] and figures["watchdog_logged"]
        return figures

    def unplug_check(self) -> dict:
        """The synth unplugged and plugged back UNPLUG_CYCLES times at random points of the music."""
        self.playing(2)
        cycles = []
        for i in range(UNPLUG_CYCLES):
            time.sleep(self.rng.uniform(0.2, 3.0))
            t_out = SYNTH.unplug()
            time.sleep(self.rng.uniform(0.2, 1.5))
            t_in = SYNTH.plug()
            note = self.wait_note(t_in, 120)
            # what the synth had heard by the end of the USB read that brought the first new
            # note (one read, one timestamp: the reconnection's CC 123 comes in the same one)
            events = [e for e in self.recorder.snapshot() if note is None or e.t <= note]
            left = balance(events).stuck(before=t_out)
            chunk = [e for e in events if e.t == note]
            all_off = next((i for i, e in enumerate(chunk) if e.kind == "cc" and e.a == 123), None)
            cycles.append({"out_s": round(t_in - t_out, 2), "resume_s": note and round(note - t_in, 2),
                           "left_sounding": len(left),
                           # a note_on ahead of the reconnection's CC 123 in that same read
                           "note_on_before_all_off": all_off is not None and any(
                               e.kind == "note_on" for e in chunk[:all_off])})
            self.console.mark("unplug", cycle=i + 1, **cycles[-1])
        resumed = sum(c["resume_s"] is not None and not c["left_sounding"] for c in cycles)
        times = sorted(c["resume_s"] for c in cycles if c["resume_s"] is not None)
        return {"ok": resumed == UNPLUG_CYCLES, "cycles": len(cycles), "resumed": resumed,
                "note_on_before_all_off": sum(c["note_on_before_all_off"] for c in cycles),
                "resume_s_median": times[len(times) // 2] if times else None,
                "resume_s_max": times[-1] if times else None, "per_cycle": cycles}

    def udev_plug_check(self) -> dict:
        """Plugging the synth in while the service is stopped starts it (70-playbach.rules)."""
        SYNTH.unplug()
        run("systemctl", "stop", UNIT, timeout=120)
        wait_for(lambda: active_state() == "inactive", 30)
        time.sleep(2)
        t = SYNTH.plug()
        started = wait_for(lambda: active_state() in ("activating", "active"), 30)
        note = self.wait_note(t)
        return {"ok": started and note is not None, "service_started": started,
                "plug_to_note_s": note and round(note - t, 2)}

    def coral_check(self) -> dict:
        """A device with the Coral's IDs gets the group and mode the rules promise.

        Judged once udev has handled the device (its database entry has USEC_INITIALIZED), not
        after a fixed wait: udev works through its queue in order, and under TCG each event's
        programs (alsactl for every sound card the unplug checks added and removed, usb_id,
        hwdb) take seconds; one run at host load 4-10 had not reached the plug after 30 s."""
        SYNTH.unplug()
        coral = MidiGadget("coral", *CORAL, "Coral Test", "PiVMCoral")
        coral.create()
        t = coral.plug()
        wait_for(lambda: usb_device_node(*CORAL) is not None, 60)
        node = usb_device_node(*CORAL)
        def handled() -> bool:
            return node is not None and "USEC_INITIALIZED=" in run(
                "udevadm", "info", "--query=property", str(node)).stdout
        figures: dict = {"node": str(node), "udev_handled": wait_for(handled, UDEV_TIMEOUT, 0.5)}
        figures["plug_to_udev_handled_s"] = round(time.monotonic() - t, 1) if figures["udev_handled"] else None
        if node is not None and node.exists():
            st = node.stat()
            import grp
            figures["group"] = grp.getgrgid(st.st_gid).gr_name
            figures["mode"] = f"{st.st_mode & 0o777:04o}"
            props = run("udevadm", "info", "--query=property", str(node)).stdout
            figures["systemd_tag"] = bool(re.search(r"^(CURRENT_)?TAGS=.*:systemd:", props, re.M))
            figures["systemd_wants"] = re.search(r"^SYSTEMD_WANTS=(.*)$", props, re.M) and \
                re.search(r"^SYSTEMD_WANTS=(.*)$", props, re.M).group(1)
        coral.remove()
        SYNTH.plug()
        figures["ok"] = (figures.get("group") == "audio" and figures.get("mode") == "0660"
                         and "playbach.service" in (figures.get("systemd_wants") or ""))
        return figures

    def bad_config_check(self) -> dict:
        self.playing(2)
        return lasting.bad_config_check(self.recorder)

    def security_check(self) -> dict:
        out = run("systemd-analyze", "security", "--no-pager", UNIT).stdout
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out)
        from web import web_security
        return {"ok": m is not None and float(m.group(1)) <= 1.0,
                "exposure": m and float(m.group(1)), "rating": m and m.group(2), "web": web_security()}

    # --- the control page (install.sh --with-web; scripts/pivm/web.py) --------------------------
    def web_check(self) -> dict:
        import web
        return web.web_check(self.recorder, self.playing)

    def web_killed_check(self) -> dict:
        import web
        self.playing(2)
        return web.web_player_killed_check(self.recorder)

    def web_no_synth_check(self) -> dict:
        import web
        self.playing(2)
        return web.web_no_synth_check(self.recorder, SYNTH)

    def first_boot(self) -> None:
        boot = self.check("boot", self.boot_check)
        if not boot["ok"]:                       # nothing plays: every later check would time out
            return self.finish()
        self.check("web", self.web_check)
        self.check("stop", self.stop_check)
        self.check("kill9", lambda: self.kill_check(signal.SIGKILL))
        self.check("watchdog", lambda: self.kill_check(signal.SIGSTOP))
        self.check("web_player_killed", self.web_killed_check)
        self.check("unplug", self.unplug_check)
        self.check("udev_plug", self.udev_plug_check)
        self.check("udev_coral", self.coral_check)
        self.check("bad_config", self.bad_config_check)
        self.check("web_no_synth", self.web_no_synth_check)
        self.check("security", self.security_check)
        self.check("clock_follow", self.clock_follow_check)
        self.check("hung_start", lambda: lasting.hung_start_check(self.recorder))
        self.check("web_bad_config", lasting.web_bad_config_check)
        self.check("four_voices", self.four_voices_check)
        if not any(self.wanted(n) for n in ("reboot", "fluidsynth", "settings_survive_reboot", "power_cut")):
            return self.finish()
        if self.wanted("settings_survive_reboot"):   # the page's change, judged after the reboot
            self.results["settings_set"] = lasting.set_settings()
        # reboot: the agent stops after the player (see the unit), so its last notes are heard
        self.results["reboot_requested_mono"] = time.monotonic()
        self.next_boot("boot2")
        run("systemctl", "reboot", "--no-block")
        while True:
            time.sleep(1)                        # until SIGTERM (on_term) ends this boot

    def next_boot(self, phase: str) -> None:
        """What the next boot is, and the figures so far, on disk for it (fsynced: boot 3 follows a
        power cut); the driver is told a reboot comes."""
        PHASE.write_text(phase + "\n")
        with open(PHASE) as f:
            os.fsync(f.fileno())
        save_results(self.results)
        folder = os.open(STATE, os.O_RDONLY)
        os.fsync(folder)
        os.close(folder)
        self.console.mark("reboot")

    # --- boot 2 ----------------------------------------------------------------------------
    def reboot_check(self) -> dict:
        import web
        note = self.wait_note(0.0)
        figures = {"first_note_mono": note,
                   "ready_mono": wait_for(lambda: active_state() == "active", 60) and
                   mono_prop(UNIT, "ActiveEnterTimestampMonotonic")}
        # the control page is back too, and says so
        at, status = web._poll(web._token(), lambda s: s.get("playing") is True, 180, 0.5)
        figures["web_playing_mono"] = at and round(at, 2)
        figures["web_status"] = {k: status.get(k) for k in ("connected", "playing")}
        figures["ok"] = note is not None and at is not None
        return figures

    def fluidsynth_check(self) -> dict:
        """No USB synth, `install.sh --with-fluidsynth`: FluidSynth plays into snd-aloop."""
        from fluid import fluidsynth_check
        return fluidsynth_check(CONFIG, SYNTH)

    def clock_follow_check(self) -> dict:
        """The player follows a drummer's clock that the synth sends (clock.py)."""
        from clock import clock_follow_check
        self.playing(2)
        return clock_follow_check(CONFIG, self.recorder, SYNTH)

    def four_voices_check(self) -> dict:
        """A voice per channel at the synth, each with its program (voices.py)."""
        from voices import four_voices_check
        self.playing(2)
        return four_voices_check(CONFIG, self.recorder)

    def second_boot(self) -> None:
        self.check("reboot", self.reboot_check)
        self.check("settings_survive_reboot",
                   lambda: lasting.settings_survive_reboot_check(self.recorder, self.results.get("settings_set", {})))
        self.playing(3)
        self.check("fluidsynth", self.fluidsynth_check)
        if not self.wanted("power_cut"):
            return self.finish()
        if self.wanted("fluidsynth"):
            from fluid import synth_back
            synth_back(CONFIG, SYNTH)   # the fluidsynth check unplugged it and emptied `port`
        self.account()   # this boot's notes at the synth, before a take that the cut interrupts
        self.results["power_cut_before"] = lasting.power_cut_prepare(self.recorder)
        self.next_boot("boot3")
        lasting.power_cut()

    def third_boot(self) -> None:
        self.check("power_cut", lambda: lasting.power_cut_check(self.recorder, self.results.get("power_cut_before", {})))
        self.finish()

    # --- the end ---------------------------------------------------------------------------
    def account(self) -> None:
        """This boot's note balance at the synth (stored per boot: the reboot splits the run)."""
        events = self.recorder.snapshot()
        b = balance(events)
        self.results.setdefault("synth", {})[f"boot{self.boot}"] = {
            "note_ons": b.note_ons, "stuck": b.stuck(), "opens": len(self.recorder.opened_at)}
        save_results(self.results)

    def finish(self) -> None:
        if SYNTH.dir.exists() and SYNTH.plugged():
            run("systemctl", "stop", UNIT, timeout=120)   # a quiet end, then the last bytes
            time.sleep(1)
        self.account()
        self.recorder.stop()
        lines = run("journalctl", "--no-pager", "-o", "short-monotonic", timeout=300).stdout
        (STATE / "journal.txt").write_text(lines)
        self.results["tracebacks_in_journal"] = lines.count("Traceback")
        self.results["tracebacks_lines"] = [l for l in lines.splitlines() if "Traceback" in l][:10]
        save_results(self.results)
        self.console.mark("result", **self.results)
        self.console.mark("done")
        os.sync()
        run("systemctl", "poweroff", "--no-block")

    def on_term(self, *_args) -> None:
        """Shutting down (the reboot): account for this boot's notes, then go."""
        if self.stopping:
            return
        self.stopping = True
        self.account()
        self.recorder.stop()
        os.sync()
        sys.exit(0)

    def main(self) -> None:
        signal.signal(signal.SIGTERM, self.on_term)
        self.console.mark("agent", boot=self.boot)
        self.recorder.start()
        SYNTH.create()
        SYNTH.plug()                             # the synth is connected at power-on
        self.console.mark("plugged", boot=self.boot)
        {1: self.first_boot, 2: self.second_boot, 3: self.third_boot}[self.boot]()


if __name__ == "__main__":
    agent = Agent()
    try:
        agent.main()
    except Exception as e:  # noqa: BLE001 - say so on the console, then end the run (unit: FailureAction)
        (STATE / "agent-errors.txt").open("a").write(traceback.format_exc())
        agent.console.mark("agent-crashed", error=f"{type(e).__name__}: {e}")
        sys.exit(1)
