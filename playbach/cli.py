"""`playbach <command>`: one CLI for the desktop and the Pi.

Each command lives in its own module with `add_arguments(parser)` and `run(args) -> int`.
Only the chosen command's module is imported, so `playbach play` on the Pi never pulls in
TensorFlow or music21.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from playbach.errors import UserError

COMMANDS = {
    "train": ("playbach.trainer.train", "train a model on a Bach corpus"),
    "evaluate": ("playbach.trainer.evaluate", "evaluate a run on its held-out test pieces, or a bundle "
                 "on a corpus: evaluate BUNDLE --corpus FILE_OR_DIR [--split test] [--json OUT]"),
    "generate": ("playbach.trainer.generate", "write a MIDI file from a bundle (what the Pi would play) "
                 "or from a run (and a piano roll)"),
    "convert": ("playbach.convert.build", "turn a run into a TFLite / Edge TPU bundle"),
    "edgetpu": ("playbach.edgetpu_compile", "add a Coral Edge TPU model to a bundle: edgetpu BUNDLE (needs edgetpu_compiler)"),
    "play": ("playbach.device.player", "play a bundle live to a MIDI port (the Pi daemon)"),
    "listen": ("playbach.listen", "set a bundle's takes beside held-out Bach by what a listener hears: "
               "listen BUNDLE --corpus FILE [--split test] [--json OUT]"),
    "bench": ("playbach.harness.bench", "benchmark bundle models and the live player; JSON out"),
    "web": ("playbach.web.server", "serve the control page and its JSON API over the player's control socket"),
    "push": ("playbach.push", "put a bundle onto the Pi: push BUNDLE --to http://playbach.local:8080 --token-file F"),
}

log = logging.getLogger("playbach")
# commands that take a bundle folder as well as a run folder, and the core module of the bundle's
BUNDLE_MODULES = {"evaluate": "playbach.evaluate_bundle", "generate": "playbach.generate_bundle"}
BUNDLE_EVALUATE = BUNDLE_MODULES["evaluate"]
DESKTOP_ONLY = ("playbach.trainer", "playbach.convert")   # not in the Pi's install (systemd/install.sh)


def module_name(command: str, rest: list[str]) -> str:
    """The module that runs `command`. `evaluate` or `generate` of a folder holding bundle.json goes
    to the core's module, which needs no TensorFlow (the Pi can run it); of a run folder to the trainer's."""
    if command in BUNDLE_MODULES and any((Path(a) / "bundle.json").is_file() for a in rest if not a.startswith("-")):
        return BUNDLE_MODULES[command]
    return COMMANDS[command][0]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = argparse.ArgumentParser(prog="playbach", description=__doc__.splitlines()[0])
    top.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    known, _ = top.parse_known_args(argv)  # which command? exits with usage if none

    rest = argv[argv.index(known.command) + 1:]
    try:
        module = importlib.import_module(module_name(known.command, rest))
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith(DESKTOP_ONLY):
            raise
        print(f"playbach {known.command}: a desktop command, not installed here (the Pi's install holds "
              "what plays; train and convert on a desktop: the README's 'Training your own model')", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"playbach {known.command}",
                                     description=COMMANDS[known.command][1])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.DEBUG if (args.verbose or known.verbose) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
