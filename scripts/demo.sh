#!/usr/bin/env bash
# The main job, on any Debian machine (no sound card needed):
#   bash scripts/demo.sh [SECONDS]
# sets the machine up (scripts/setup.sh), plays the shipped models/default bundle live for
# SECONDS (default 30) into FluidSynth on a private JACK server with the dummy driver, and
# leaves take.mid (what was played), take.wav (FluidSynth renders it) and take.png (piano roll).
# Extra `playbach play` flags can go in $PLAY_ARGS, e.g. PLAY_ARGS="--temperature 0.7 --seed 1".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_TO_PLAY="${1:-30}"
BUNDLE="${PLAYBACH_BUNDLE:-models/default}"  # another bundle: PLAYBACH_BUNDLE=folder
SOUNDFONT=/usr/share/sounds/sf2/TimGM6mb.sf2
SERVER="playbach-demo-$$"
LOGS="$(mktemp -d)"

bash scripts/setup.sh
PY=.venv/bin/python
[ -f "$BUNDLE/bundle.json" ] || { echo "demo: $BUNDLE/bundle.json is missing (a shipped model bundle)" >&2; exit 2; }

# A private JACK server: its own name, and no client may start one behind our back.
export JACK_DEFAULT_SERVER="$SERVER" JACK_NO_START_SERVER=1 JACK_NO_AUDIO_RESERVATION=1
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # wait_for WHAT PID LOG COMMAND...: poll COMMAND until it succeeds
    local what="$1" pid="$2" log="$3"; shift 3
    for _ in $(seq 200); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "demo: $what exited:" >&2; tail -20 "$log" >&2; exit 1; }
        sleep 0.1
    done
    echo "demo: $what did not come up in 20 s:" >&2; tail -20 "$log" >&2; exit 1
}

echo "demo: starting jackd (dummy driver) and FluidSynth"
jackd --no-realtime -d dummy -r 48000 -p 256 >"$LOGS/jackd.log" 2>&1 &
pids+=($!)
wait_for jackd "${pids[-1]}" "$LOGS/jackd.log" jack_lsp
# FluidSynth quits when its shell reads end-of-input, so its stdin is a FIFO this script holds
# open (no TCP server, -s, that a second FluidSynth would clash with). Audio goes to JACK's
# dummy driver; the MIDI input is fluidsynth-midi:midi_00.
mkfifo "$LOGS/fluidsynth.in"
exec 3<>"$LOGS/fluidsynth.in"
fluidsynth -q -a jack -m jack -g 0.6 -o midi.autoconnect=0 "$SOUNDFONT" <&3 >"$LOGS/fluidsynth.log" 2>&1 &
pids+=($!)
has_midi_port() { jack_lsp | grep -q '^fluidsynth-midi:'; }
wait_for fluidsynth "${pids[-1]}" "$LOGS/fluidsynth.log" has_midi_port

echo "demo: playing $BUNDLE for $SECONDS_TO_PLAY s into FluidSynth"
rm -f take.mid take.wav take.png
# shellcheck disable=SC2086  # PLAY_ARGS is a list of flags
# --program 6: FluidSynth's General MIDI harpsichord (the player sends no Program Change unless asked)
.venv/bin/playbach play --bundle "$BUNDLE" --midi-api jack --port fluidsynth --program 6 \
    --seconds "$SECONDS_TO_PLAY" --record take.mid ${PLAY_ARGS:-}

echo "demo: rendering take.wav and take.png"
fluidsynth -ni -q -g 0.6 -F take.wav -r 44100 "$SOUNDFONT" take.mid >/dev/null
"$PY" -m playbach.trainer.pianoroll take.mid take.png

notes="$("$PY" -c 'import mido, sys; print(sum(m.type == "note_on" and m.velocity > 0 for m in mido.MidiFile(sys.argv[1])))' take.mid)"
echo
echo "demo: done. Left in $(pwd):"
echo "  take.mid  $notes notes played live ($(stat -c %s take.mid) bytes)"
echo "  take.wav  FluidSynth's rendering ($(stat -c %s take.wav) bytes)"
echo "  take.png  piano roll"
