#!/usr/bin/env bash
# Model work per emitted note on the Pi's architecture, emulated: `playbach bench`'s per-note
# figure (planning off and on, one run) inside the emulated Pi's own image.
#
#   sudo bash bench/per_note_arm64.sh [--suite trixie|bookworm] [--notes N] [--out FILE]
#
# The image scripts/pi-vm.sh built last for the suite (cached under $PIVM_CACHE, default
# /var/cache/playbach/pi-vm) is mounted read-only with a throwaway layer on top; this work tree's
# playbach (core, device, harness: what the Pi installs) replaces the image's, and the bundle is
# models/default. Every arm64 program runs under qemu-user as the Pi 4's Cortex-A72
# (scripts/lib/rootfs.sh), so the times are an emulated CPU's: upper bounds for a Pi, and the
# ratio of planning on to off is what carries over. Writes JSON (default
# bench/results/per_note_arm64.json) with the image's build.json beside the figures.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=trixie
NOTES=300
OUT=$REPO/bench/results/per_note_arm64.json
CACHE=${PIVM_CACHE:-/var/cache/playbach/pi-vm}
die() { echo "per_note_arm64.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --suite) SUITE=$2; shift 2 ;;
        --notes) NOTES=$2; shift 2 ;;
        --out) OUT=$(realpath -m "$2"); shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (loop and overlay mounts, chroot): run it with sudo"
# shellcheck source=../scripts/lib/rootfs.sh
. "$REPO/scripts/lib/rootfs.sh"
image=$(ls -td "$CACHE"/image-"$SUITE"-*/ 2>/dev/null | head -1)
[ -n "$image" ] && [ -f "$image/disk.img" ] \
    || die "no emulated Pi image for $SUITE under $CACHE: build one with scripts/pi-vm.sh --suite $SUITE"
binfmt

work=$(mktemp -d -t per-note-arm64.XXXXXX)
mounts=()
cleanup() { local m; for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/lower" "$work/layer" "$work/root"
mount -t tmpfs tmpfs "$work/layer" && mounts=("$work/layer")
mkdir -p "$work/layer/upper" "$work/layer/work"
mount -o loop,ro "$image/disk.img" "$work/lower" && mounts=("$work/lower" "${mounts[@]}")
mount -t overlay overlay -o "lowerdir=$work/lower,upperdir=$work/layer/upper,workdir=$work/layer/work" "$work/root" \
    && mounts=("$work/root" "${mounts[@]}")
mount -t proc proc "$work/root/proc" && mounts=("$work/root/proc" "${mounts[@]}")
mount --bind /dev "$work/root/dev" && mounts=("$work/root/dev" "${mounts[@]}")

site=$(ls -d "$work"/root/opt/playbach/venv/lib/python3*/site-packages/playbach)
[ -d "$site" ] || die "$image: no playbach installed under /opt/playbach/venv"
rm -rf "$site"
mkdir -p "$site"
cp -r "$REPO"/playbach/*.py "$site/"
for part in device harness; do cp -r "$REPO/$part" "$site/$part"; done
find "$site" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$work/root/tmp/bundle"
cp "$REPO"/models/default/* "$work/root/tmp/bundle/"

echo "[per-note arm64] $image: playbach bench under qemu-user ($QEMU_CPU), $NOTES notes per plan" >&2
chroot_in "$work/root" /opt/playbach/venv/bin/playbach bench /tmp/bundle --events 200 \
    --per-note-events "$NOTES" --out /tmp/bench.json >&2 || die "playbach bench failed inside the image"
python3 - "$work/root/tmp/bench.json" "$image/build.json" "$OUT" <<'PY'
import json, os, platform, sys
bench, build, out = sys.argv[1:]
result = {"benchmark": "per_note_arm64", "emulated": f"qemu-user as {os.environ['QEMU_CPU']} on {platform.machine()}",
          "host_cpus": os.cpu_count(), "image": json.load(open(build)), **json.load(open(bench))}
per = result["per_note"]
on = next(k for k in per if k.startswith("plan=") and k != "plan=0")   # the player's default plan
result["plan_on_over_off"] = round(per[on]["cpu_ms_per_note"] / per["plan=0"]["cpu_ms_per_note"], 2)
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
os.replace(out + ".tmp", out)
print(json.dumps({k: per[k]["cpu_ms_per_note"] for k in per if k.startswith("plan=")}
                 | {"plan_on_over_off": result["plan_on_over_off"]}))
PY
