#!/usr/bin/env bash
# The appliance, booted: an emulated Raspberry Pi 4 (arm64, Cortex-A72) with real systemd, a
# USB MIDI synth on a virtual USB bus, the control page, and faults. Every check in one run.
#
#   sudo bash scripts/pi-vm.sh [--suite trixie|bookworm] [--json OUT] [--rebuild] [--keep-vm-dir]
#                              [--checks NAME,...] [--from-image FILE.img]
#
# 1. host tools (qemu-system-arm, mmdebstrap, qemu-user-static, binfmt-support), like setup.sh;
# 2. a bootable Debian arm64 disk image of SUITE (trixie, the default: today's Raspberry Pi OS,
#    Python 3.13; or bookworm, the one before, Python 3.11), cached in /var/cache/playbach/pi-vm
#    (PIVM_CACHE; outside the checkout, so a fresh clone on the same machine reuses it), one per
#    suite, keyed by a hash of everything that goes into it (packages, these scripts, the
#    checkout files install.sh uses); playbach is installed into it by its own
#    systemd/install.sh --with-web (pivm/build.sh);
# 3. qemu-system-aarch64 -M virt -cpu cortex-a72 -accel tcg, serial console, no network; the
#    in-guest agent (scripts/pivm/agent.py) plugs a USB MIDI gadget in, records what the synth
#    receives, uses the control page (pivm/web.py), runs the faults, reports on the console;
# 4. OUT (default bench/results/pi-vm-SUITE.json) with every figure and check, and OUT's serial log
#    beside it (OUT without .json, plus .serial.log). Exit 1 if a check fails, 2 if a step fails.
# --checks runs only the named checks (and boot, which they all need), for working on one; the
# others are reported "not run" and fail the run. CI runs them all.
# --from-image boots the root of a card made by scripts/build-image.sh (as the README builds it:
# --with-web) instead of an image of its own, its FAT as a second disk (pivm/card.sh), every check
# but fluidsynth (reported not_applicable); OUT defaults to bench/results/pi-vm-card-pi4.json.
# Needs root (mmdebstrap, chroot, mounts). Details: docs/appliance.md#the-emulated-pi-scriptspi-vmsh.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${PIVM_CACHE:-/var/cache/playbach/pi-vm}
SUITE=trixie
OUT=""
REBUILD=0
KEEP=0
CHECKS=all
FROM_IMAGE=""
TIMEOUT=${PIVM_TIMEOUT:-2400}   # seconds for the whole boot-and-check run: it cannot hang

while [ $# -gt 0 ]; do
    case $1 in
        --suite) SUITE="${2:?--suite needs trixie or bookworm}"; shift 2 ;;
        --suite=*) SUITE="${1#*=}"; shift ;;
        --json) OUT=$(realpath -m "${2:?--json needs a file}"); shift 2 ;;
        --json=*) OUT=$(realpath -m "${1#*=}"); shift ;;
        --rebuild) REBUILD=1; shift ;;
        --keep-vm-dir) KEEP=1; shift ;;
        --checks) CHECKS="${2:?--checks needs names, e.g. web,udev_coral}"; shift 2 ;;
        --checks=*) CHECKS="${1#*=}"; shift ;;
        --from-image) FROM_IMAGE=$(realpath -m "${2:?--from-image needs a card image}"); shift 2 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "pi-vm.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case $SUITE in
    trixie|bookworm) ;;
    *) echo "pi-vm.sh: --suite '$SUITE': trixie or bookworm" >&2; exit 2 ;;
esac
if [ -n "$FROM_IMAGE" ]; then
    [ "$SUITE" = trixie ] || { echo "pi-vm.sh: --from-image: the card is Debian trixie (build-image.sh): not --suite $SUITE" >&2; exit 2; }
    OUT=${OUT:-$REPO/bench/results/pi-vm-card-pi4.json}
fi
OUT=${OUT:-$REPO/bench/results/pi-vm-$SUITE.json}
# the agent's checks after boot, in its order (scripts/pivm/agent.py)
KNOWN_CHECKS="web stop kill9 watchdog web_player_killed unplug udev_plug udev_coral bad_config web_no_synth security clock_follow hung_start web_bad_config four_voices settings_survive_reboot reboot fluidsynth power_cut"
if [ "$CHECKS" != all ]; then
    for c in ${CHECKS//,/ }; do
        case " $KNOWN_CHECKS " in
            *" $c "*) ;;
            *) echo "pi-vm.sh: --checks: unknown check '$c'; known: ${KNOWN_CHECKS// /, }" >&2; exit 2 ;;
        esac
    done
fi

log() { echo "[pi-vm $(date +%T)] $*" >&2; }
die() { echo "pi-vm.sh: FAILED: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "setup: needs root (mmdebstrap, chroot and mounts): run it with sudo"

# --- host tools, the way scripts/setup.sh installs them ------------------------------------------
HOST_PACKAGES=(qemu-system-arm mmdebstrap arch-test qemu-user-static binfmt-support e2fsprogs python3 fdisk mtools)
host_tools() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "setup: installing ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 \
        || die "setup: apt-get install ${missing[*]} failed"
}

# shellcheck source=pivm/build.sh
. "$REPO/scripts/pivm/build.sh"
trap build_cleanup EXIT
trap 'exit 130' INT TERM   # the EXIT trap cleans up; the driver kills its qemu on the way out

host_tools
mkdir -p "$CACHE" "$(dirname "$OUT")"
BASE=$CACHE/base-$SUITE-$(base_key)
IMAGE=$CACHE/image-$SUITE-$(image_key)
if [ $REBUILD = 1 ]; then rm -rf --one-file-system "$BASE" "$IMAGE"; fi
BUILD_SECONDS=0
if [ -n "$FROM_IMAGE" ]; then
    # shellcheck source=pivm/card.sh
    . "$REPO/scripts/pivm/card.sh"
    IMAGE=$CACHE/card-trixie
    card_image "$IMAGE" "$FROM_IMAGE"
    # every check but those the card cannot have (build.json's not_applicable, pivm/card.sh)
    [ "$CHECKS" != all ] || CHECKS=$(python3 -c 'import json, sys
skip = json.load(open(sys.argv[1])).get("not_applicable", {})
print(",".join(c for c in sys.argv[2].split() if c not in skip))' "$IMAGE/build.json" "$KNOWN_CHECKS")
elif [ ! -f "$IMAGE/disk.img" ]; then
    start=$SECONDS
    binfmt
    [ -d "$BASE/root" ] || build_base "$BASE"
    build_image "$IMAGE" "$BASE"
    BUILD_SECONDS=$((SECONDS - start))
    log "build: done in ${BUILD_SECONDS} s ($IMAGE)"
    # keep only what this checkout uses (each suite's): an image is 1-2 GB
    for old in "$CACHE"/base-"$SUITE"-* "$CACHE"/image-"$SUITE"-*; do
        [ "$old" = "$BASE" ] || [ "$old" = "$IMAGE" ] || rm -rf --one-file-system "$old"
    done
else
    log "build: cached image $IMAGE"
fi

log "boot: $SUITE in qemu-system-aarch64 -M virt -cpu cortex-a72 (TCG); every check in one run (up to ${TIMEOUT} s)"
args=(--suite "$SUITE" --image "$IMAGE" --json "$OUT" --timeout "$TIMEOUT" --build-seconds "$BUILD_SECONDS"
      --checks "$CHECKS")
[ $KEEP = 0 ] || args+=(--keep)
# one emulated Pi at a time on a machine (the lock goes with the driver): two would share the
# cores and every figure would be the slower for it
exec 9>"$CACHE/.boot.lock"
flock -n 9 || { log "boot: waiting for the other pi-vm.sh run on this machine"; flock 9; }
exec python3 "$REPO/scripts/pivm/driver.py" "${args[@]}"
