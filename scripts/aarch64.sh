#!/usr/bin/env bash
# The Pi's architecture: install the device extra into an arm64 Debian root and play on it.
#
#   sudo scripts/aarch64.sh [--bundle DIR] [--seconds N] [--seed N] [--rebuild | --quick]
#
# 1. an arm64 Debian bookworm root (Python 3.11, as Raspberry Pi OS 64-bit) made by mmdebstrap,
#    cached in .cache/aarch64-root (git-ignored; --rebuild makes it anew);
#    (--quick keeps the last run's venv and only reinstalls playbach from /src, for iterating)
# 2. every arm64 program in it runs under qemu-user through binfmt_misc (qemu-user-static);
# 3. a fresh venv inside with `pip install "/src[device]"` (this work tree copied to /src):
#    aarch64 wheels from PyPI, no TensorFlow;
# 4. a JACK server on the dummy driver inside the root (there is no ALSA sequencer, /dev/snd/seq,
#    in a chroot without a sound card) and jack_midi_dump as the receiving synth;
# 5. `playbach play --record take.mid --seconds N` from the bundle into that port;
# 6. a JSON summary on stdout and in bench/results/aarch64.json.
# Needs root (mmdebstrap, chroot, mounts). Heavy: run nothing else big alongside it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$REPO/.cache/aarch64-root
OUTDIR=$REPO/.cache/aarch64-out
RESULT=$REPO/bench/results/aarch64.json
SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,ca-certificates,libasound2,jackd2
VENV=/opt/playbach-venv
JACK_SERVER=playbach-aarch64
JACK_PERIOD=${JACK_PERIOD:-4096}   # frames at 48 kHz: 85 ms
BUNDLE=$REPO/models/default
PLAY_SECONDS=5
SEED=1
REBUILD=0
QUICK=0

while [ $# -gt 0 ]; do
    case $1 in
        --bundle) BUNDLE=$(cd "$2" && pwd); shift 2 ;;
        --seconds) PLAY_SECONDS=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --rebuild) REBUILD=1; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "aarch64.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "[aarch64] $*" >&2; }
die() { echo "aarch64.sh: $*" >&2; exit 2; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$(now)"; }

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot and mounts): run it with sudo"
[ -f "$BUNDLE/bundle.json" ] || die "$BUNDLE/bundle.json: no bundle there (make one with \`playbach convert\`, or pass --bundle DIR)"

# --- host tools and binfmt_misc ------------------------------------------------------------------
host_tools() {
    local missing=()
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
    fi
}

# arm64 ELF files are handed to qemu-aarch64 by the kernel; the F flag (qemu-user-static's
# default) opens the interpreter at registration, so it works inside the chroot without a copy.
binfmt() {
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
            || die "cannot mount binfmt_misc; qemu-user needs it to run a whole arm64 root"
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >&2 \
        || die "cannot register qemu-aarch64 in binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
}

# whatever an interrupted run left mounted under $1, deepest first, so rm -rf stays inside the root
unmount_all() {
    local m
    for m in $(awk -v r="$1/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m"; done
}

# --- the arm64 root, cached ------------------------------------------------------------------------
MARK=.playbach-rootfs   # names what the cached root was made from; another recipe rebuilds it
RECIPE="$SUITE arm64 minbase $PACKAGES"
rootfs() {
    if [ $REBUILD = 0 ] && [ "$(cat "$ROOT/$MARK" 2>/dev/null)" = "$RECIPE" ]; then
        ROOTFS_SECONDS='"cached"'
        return
    fi
    log "building the arm64 $SUITE root in $ROOT (a few minutes under qemu)"
    local start; start=$(now)
    unmount_all "$ROOT.tmp"; unmount_all "$ROOT"
    rm -rf --one-file-system "$ROOT.tmp" "$ROOT"
    mmdebstrap --mode=root --architectures=arm64 --variant=minbase --include="$PACKAGES" \
        "$SUITE" "$ROOT.tmp" "$MIRROR" >&2
    echo "$RECIPE" > "$ROOT.tmp/$MARK"
    mv "$ROOT.tmp" "$ROOT"   # only a finished root is ever cached
    ROOTFS_SECONDS=$(since "$start")
}

# --- running inside -------------------------------------------------------------------------------
MOUNTS=()
PIDS=()
cleanup() {
    local pid m
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

mount_inside() {
    local type=$1 target=$ROOT$2
    mountpoint -q "$target" || { mount -t "$type" "$type" "$target"; MOUNTS=("$target" "${MOUNTS[@]}"); }
}

# A clean environment: nothing of the host's (its pip settings, its JACK server) leaks in.
# chroot and env exec what follows, so "${INSIDE[@]}" cmd & leaves the program's own pid in $!.
INSIDE=(chroot "$ROOT" /usr/bin/env -i PATH=$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
        JACK_DEFAULT_SERVER=$JACK_SERVER JACK_NO_START_SERVER=1 JACK_NO_AUDIO_RESERVATION=1)
inside() { "${INSIDE[@]}" "$@"; }

prepare() {
    mount_inside proc /proc
    # no sysfs: with the host's (x86) CPUs in /sys, TFLite's cpuinfo crashes the arm64 Python
    # (SIGSEGV in Interpreter()); without it cpuinfo logs "failed to parse" and carries on
    mount_inside tmpfs /dev/shm  # JACK's shared memory and sockets
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    # an HTTPS-inspecting proxy's CA, where the host has one, so pip inside reaches PyPI too
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
        inside update-ca-certificates >/dev/null
    fi
    # this work tree (tracked and new files, not what .gitignore leaves out), and the bundle
    rm -rf "$ROOT/src" "$ROOT/bundle" "$ROOT/out"
    mkdir -p "$ROOT/src" "$ROOT/bundle" "$ROOT/out"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - --ignore-failed-read -cf -) | tar -xf - -C "$ROOT/src"
    cp -r "$BUNDLE/." "$ROOT/bundle/"
}

venv() {
    local start; start=$(now)
    if [ $QUICK = 1 ] && [ -x "$ROOT$VENV/bin/playbach" ]; then
        log "--quick: reinstalling only playbach into the existing venv"
        inside pip install -q --disable-pip-version-check --no-deps --force-reinstall /src >&2
        INSTALL_SECONDS='"quick"'
        return
    fi
    log "fresh venv: pip install \"/src[device]\" (aarch64 wheels)"
    rm -rf "${ROOT:?}$VENV"
    inside python3 -m venv $VENV
    inside pip install -q --disable-pip-version-check "/src[device]" >&2
    INSTALL_SECONDS=$(since "$start")
    inside pip freeze --disable-pip-version-check --exclude-editable > "$OUTDIR/pip-freeze.txt"
}

jack() {
    log "JACK on the dummy driver inside the root, jack_midi_dump as the receiver"
    # a long period: under emulation a short one overruns (xruns), and JACK drops a late cycle's MIDI
    "${INSIDE[@]}" jackd --no-realtime -d dummy -r 48000 -p $JACK_PERIOD > "$OUTDIR/jackd.log" 2>&1 &
    PIDS+=($!)
    inside jack_wait -w -t 60 >/dev/null 2>&1 || die "jackd did not start inside the root: $OUTDIR/jackd.log"
    "${INSIDE[@]}" jack_midi_dump -a > "$OUTDIR/received.log" 2>&1 &
    DUMP_PID=$!
    PIDS+=($DUMP_PID)
    for _ in $(seq 60); do
        inside jack_lsp 2>/dev/null | grep -q '^midi-monitor:input' && return
        sleep 0.5
    done
    die "jack_midi_dump's port did not appear: $OUTDIR/received.log"
}

play() {
    log "playbach play --seconds $PLAY_SECONDS --record take.mid (into JACK port midi-monitor)"
    local start; start=$(now)
    inside playbach play --bundle /bundle --midi-api jack --port midi-monitor --seed "$SEED" \
        --seconds "$PLAY_SECONDS" --record /out/take.mid --stats /out/stats.json 2>&1 \
        | tee "$OUTDIR/play.log" >&2
    PLAY_WALL_SECONDS=$(since "$start")
    sleep 0.5                               # let the last period reach the receiver
    kill "$DUMP_PID"; wait "$DUMP_PID" 2>/dev/null || true   # it flushes its log on SIGTERM
    cp "$ROOT/out/take.mid" "$ROOT/out/stats.json" "$OUTDIR/"
}

# --- the run --------------------------------------------------------------------------------------
mkdir -p "$OUTDIR"
host_tools
binfmt
rootfs
prepare
venv
VENV_MB=$(du -sm "$ROOT$VENV" | cut -f1)
inside python3 /src/scripts/aarch64/probe.py facts > "$OUTDIR/facts.json"
jack
play
cp "$OUTDIR/received.log" "$ROOT/out/received.log"
inside python3 /src/scripts/aarch64/probe.py take /out/take.mid /out/stats.json /out/received.log > "$OUTDIR/take.json"
log "timing model.step for each step variant (300 events each, under emulation)"
inside python3 /src/scripts/aarch64/probe.py steps /bundle 300 > "$OUTDIR/steps.json"
# the same on this host's own CPU, natively, to show what emulation costs
if [ -x "$REPO/.venv/bin/python" ]; then
    "$REPO/.venv/bin/python" "$REPO/scripts/aarch64/probe.py" steps "$BUNDLE" 300 > "$OUTDIR/steps_native.json" \
        2>/dev/null || echo '{}' > "$OUTDIR/steps_native.json"
else
    echo '{}' > "$OUTDIR/steps_native.json"
fi

python3 - "$OUTDIR" "$RESULT" <<EOF
import json, sys, os, platform
out, result = sys.argv[1], sys.argv[2]
load = lambda name: json.load(open(os.path.join(out, name)))
summary = {
    "what": "device extra installed and played in an arm64 Debian $SUITE root under qemu-user",
    "host": {"machine": platform.machine(), "qemu": os.popen("qemu-aarch64-static --version").readline().strip()},
    "inside": load("facts.json"),
    "bundle": "$BUNDLE".replace("$REPO/", ""),
    "command": "playbach play --bundle /bundle --midi-api jack --port midi-monitor --seed $SEED "
               "--seconds $PLAY_SECONDS --record /out/take.mid --stats /out/stats.json",
    "take": load("take.json"),
    "step_ms_emulated": load("steps.json").get("step_ms"),
    "step_ms_native_host": load("steps_native.json").get("step_ms"),
    "venv_mb": $VENV_MB,
    "seconds": {"rootfs": $ROOTFS_SECONDS, "venv_and_pip_install": $INSTALL_SECONDS,
                "play_command_wall": $PLAY_WALL_SECONDS},
    "files": {"take": "$OUTDIR/take.mid".replace("$REPO/", ""),
              "pip_freeze": "$OUTDIR/pip-freeze.txt".replace("$REPO/", "")},
}
summary["ok"] = (summary["inside"]["uname_m"] == "aarch64" and not summary["inside"]["tensorflow_installed"]
                 and summary["take"]["notes_recorded"] > 0 and summary["take"]["note_ons_received_over_jack"] > 0)
text = json.dumps(summary, indent=2)
tmp = result + ".tmp"
open(tmp, "w").write(text + "\n")
os.replace(tmp, result)
print(text)
EOF
