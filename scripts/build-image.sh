#!/usr/bin/env bash
# A flashable SD card image of playbach for a Raspberry Pi 4: Debian trixie arm64, made as Debian's own
# Raspberry Pi images are (raspi-firmware, linux-image-arm64, the Pi's device tree), playbach installed
# by its own systemd/install.sh. Flash it, edit playbach.toml on the card, plug in a synth, power on.
#
#   sudo scripts/build-image.sh --board pi4 --out FILE.img [--with-web] [--with-fluidsynth]
#                               [--boot-test --json OUT]
#
# --boot-test boots a copy of the finished image (its kernel, device tree and root partition) in QEMU's
# raspi4b machine (QEMU 10 from a Debian trixie root made with mmdebstrap, run by chroot) and writes
# OUT (JSON: image_bytes, image_xz_bytes, boot_to_player_waiting_s, first_boot_config_applied,
# token_created, hostname, journal_errors) with the serial log beside it; also writes FILE.img.xz.
# Needs root. The Debian roots are cached in /var/cache/playbach (IMAGE_CACHE). The image is built
# under a temporary name and renamed only when complete: a failed or interrupted build leaves no FILE.img.
# Exit 2: bad usage or a failed step (one message says which); 1: the boot test ran and a check failed.
# Details: docs/image.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/rootfs.sh
. "$REPO/scripts/lib/rootfs.sh"
CACHE=${IMAGE_CACHE:-/var/cache/playbach}
BOARD="" OUT="" JSON="" BOOT_TEST=0 WITH_WEB=0 WITH_FLUIDSYNTH=0

log() { echo "[build-image $(date +%T)] $*" >&2; }
die() { echo "build-image.sh: $*" >&2; exit 2; }
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --board) BOARD=${2:?--board needs pi4}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --json) JSON=${2:?--json needs a file}; shift 2 ;;
        --boot-test) BOOT_TEST=1; shift ;;
        --with-web) WITH_WEB=1; shift ;;
        --with-fluidsynth) WITH_FLUIDSYNTH=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "build-image.sh: unknown argument '$1'" >&2; usage 2 ;;
    esac
done
case $BOARD in
    pi4) ;;
    pi5) die "--board pi5: Debian's kernel does not drive the Pi 5's USB ports yet (RP1); see docs/image.md" ;;
    *) die "--board must be pi4 (got '${BOARD}')" ;;
esac
[ -n "$OUT" ] || die "--out FILE.img is required"
[ "$BOOT_TEST" = 0 ] || [ -n "$JSON" ] || die "--boot-test needs --json OUT"
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot, mkfs): run it with sudo"
OUT=$(realpath -m "$OUT")
[ -z "$JSON" ] || JSON=$(realpath -m "$JSON")
OUT_DIR=$(dirname "$OUT")
[ -d "$OUT_DIR" ] && [ -w "$OUT_DIR" ] || die "$OUT_DIR: no such writable folder for --out"

# --- space: a clear error up front rather than a full disk half-way ----------------------------
free_mb() { df -Pm "$1" | awk 'NR == 2 {print $4}'; }
need_space() {   # folder, MiB, what for
    mkdir -p "$1"
    local have; have=$(free_mb "$1")
    [ "$have" -ge "$2" ] || die "not enough space in $1 for $3: ${have} MiB free, ${2} MiB needed"
}
need_space "$OUT_DIR" $((BOOT_TEST ? 8192 : 3072)) "the image"
need_space "$CACHE" 6144 "the Debian roots and the work copy"

# --- cleanup: whatever stops the build, nothing half-made stays ---------------------------------
WORK="" BUILD_TMP="" CHILD="" PARTIAL=""
BUILD_MOUNTS=()
cleanup() {
    local m
    [ -z "$CHILD" ] || { kill_tree "$CHILD"; wait "$CHILD" 2>/dev/null || true; }
    for m in "${BUILD_MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [ -z "$BUILD_TMP" ] || rm -rf --one-file-system "$BUILD_TMP"
    [ -z "$WORK" ] || rm -rf --one-file-system "$WORK"
    [ -z "$PARTIAL" ] || rm -f "$PARTIAL"
}
trap cleanup EXIT
trap 'echo "build-image.sh: interrupted${PARTIAL:+; $OUT was not written}" >&2; exit 130' INT TERM HUP

# --- host tools ---------------------------------------------------------------------------------
HOST_PACKAGES=(mmdebstrap arch-test qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs xz-utils python3
               device-tree-compiler)
missing=()
for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "setup: installing ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 \
        || die "setup: apt-get install ${missing[*]} failed"
fi
binfmt

# shellcheck source=image/build.sh
. "$REPO/scripts/image/build.sh"

start=$SECONDS
mkdir -p "$CACHE/image"
BASE=$CACHE/image/base-$(base_key)
[ -d "$BASE/root" ] || build_base "$BASE"
WORK=$(mktemp -d "$CACHE/image/work.XXXXXX")
log "image: copy of the base root ($BASE)"
cp -a "$BASE/root" "$WORK/root"
install_playbach "$WORK/root"
configure_root "$WORK/root"
PARTIAL=$(mktemp "$OUT_DIR/.$(basename "$OUT").XXXXXX.partial")
assemble "$WORK/root" "$PARTIAL" "$WORK"
rm -rf --one-file-system "$WORK/root"
mv -f "$PARTIAL" "$OUT"
PARTIAL=""
BUILD_SECONDS=$((SECONDS - start))
log "image: $OUT ($(du -h --apparent-size "$OUT" | cut -f1)) in ${BUILD_SECONDS} s"

[ "$BOOT_TEST" = 1 ] || exit 0
# shellcheck source=image/boottest.sh
. "$REPO/scripts/image/boottest.sh"
boot_test "$OUT" "$JSON" "$WORK" "$BUILD_SECONDS"
