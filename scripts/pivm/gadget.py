"""A USB device made up inside the emulated Pi: a configfs gadget on dummy_hcd's UDC.

dummy_hcd is a virtual USB device controller (UDC) wired to a virtual USB host controller of
the same kernel. A gadget with the MIDI function (usb_f_midi) bound to that UDC enumerates on
the host side as a class-compliant USB MIDI device, which snd-usb-audio binds exactly as it
would bind a synth plugged into a Pi. Binding and unbinding the UDC are plugging in and
unplugging: real USB connect/disconnect events for the kernel, udev and ALSA.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

CONFIGFS = Path("/sys/kernel/config/usb_gadget")
UDC_CLASS = Path("/sys/class/udc")


def udc_name() -> str:
    names = sorted(os.listdir(UDC_CLASS)) if UDC_CLASS.is_dir() else []
    if not names:
        raise RuntimeError("no UDC in /sys/class/udc: is dummy_hcd loaded?")
    return names[0]


def _write(path: Path, value: str) -> None:
    path.write_text(value + "\n")


class MidiGadget:
    """One USB MIDI device: vendor/product ids, strings, one MIDI function (1 in, 1 out port)."""

    def __init__(self, name: str, vid: int, pid: int, product: str, card_id: str) -> None:
        self.dir = CONFIGFS / name
        self.vid, self.pid, self.product, self.card_id = vid, pid, product, card_id

    def create(self) -> None:
        d = self.dir
        if d.exists():
            return
        d.mkdir()
        _write(d / "idVendor", f"0x{self.vid:04x}")
        _write(d / "idProduct", f"0x{self.pid:04x}")
        _write(d / "bcdUSB", "0x0200")
        _write(d / "bcdDevice", "0x0100")
        strings = d / "strings/0x409"
        strings.mkdir(parents=True)
        _write(strings / "manufacturer", "pi-vm")
        _write(strings / "product", self.product)     # snd-usb-audio names the card after it
        _write(strings / "serialnumber", f"{self.pid:04x}0001")
        func = d / "functions/midi.usb0"
        func.mkdir(parents=True)
        _write(func / "id", self.card_id)             # the gadget-side ALSA card's id
        _write(func / "in_ports", "1")
        _write(func / "out_ports", "1")
        config = d / "configs/c.1"
        (config / "strings/0x409").mkdir(parents=True)
        _write(config / "strings/0x409/configuration", "MIDI")
        _write(config / "MaxPower", "100")
        os.symlink(func, config / "midi.usb0")

    def plugged(self) -> bool:
        return (self.dir / "UDC").read_text().strip() != ""

    def plug(self) -> float:
        """Bind to the UDC (the cable goes in); returns the monotonic time it did."""
        _write(self.dir / "UDC", udc_name())
        return time.monotonic()

    def unplug(self) -> float:
        if self.plugged():
            _write(self.dir / "UDC", "")
        return time.monotonic()

    def remove(self) -> None:
        d = self.dir
        if not d.exists():
            return
        self.unplug()
        os.unlink(d / "configs/c.1/midi.usb0")
        for sub in ("configs/c.1/strings/0x409", "configs/c.1", "functions/midi.usb0", "strings/0x409"):
            (d / sub).rmdir()
        d.rmdir()


def usb_device_node(vid: int, pid: int) -> Path | None:
    """/dev/bus/usb/BBB/DDD of the (host-side) USB device with these ids, if enumerated."""
    for dev in Path("/sys/bus/usb/devices").iterdir():
        try:
            if (int((dev / "idVendor").read_text(), 16), int((dev / "idProduct").read_text(), 16)) == (vid, pid):
                bus, num = int((dev / "busnum").read_text()), int((dev / "devnum").read_text())
                return Path(f"/dev/bus/usb/{bus:03d}/{num:03d}")
        except (OSError, ValueError):
            continue
    return None
