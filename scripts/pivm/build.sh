#!/usr/bin/env bash
# Build the emulated Pi's boot files, in two cached layers (sourced by scripts/pi-vm.sh, which
# has set REPO, CACHE, SUITE, log(), die() and the cleanup trap that calls build_cleanup):
#
#   base-<suite>-<key>/root   Debian SUITE arm64 with kernel, systemd, udev, ALSA, Python, FluidSynth
#                       (mmdebstrap under qemu-user; about 4 min; changes only with this file)
#   image-<suite>-<key>/  disk.img (ext4), vmlinuz, initrd.img: the base plus playbach installed
#                       by its own systemd/install.sh --with-web, as a Pi user would, plus the test
#                       agent's unit (its Python files are written into each run's copy of the disk
#                       by pivm/driver.py: a change to a check does not rebuild the image)
#
# Both are built in a "*.tmp" folder and renamed only when complete, so an interrupted or failed
# build never leaves a cache entry that a later run would trust.

: "${SUITE:?pi-vm.sh sets SUITE (trixie or bookworm)}"
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# What a Pi OS Lite has that matters here, plus what the checks need (alsa-utils: arecord,
# aconnect; fluidsynth and a small GM soundfont for the --with-fluidsynth path; e2fsprogs is
# not needed: the root is made on the host with mkfs.ext4 -d).
BASE_PACKAGES=systemd,systemd-sysv,udev,kmod,linux-image-arm64,initramfs-tools,alsa-utils,python3,python3-venv,ca-certificates,fluidsynth,timgm6mb-soundfont
# The initramfs only has to find an ext4 root on virtio-blk: a short module list keeps
# update-initramfs (a shell script, slow under qemu-user) to seconds instead of minutes.
INITRD_MODULES="virtio_pci virtio_mmio virtio_blk virtio_rng crc32c_generic libcrc32c ext4"
# The checkout as a Pi user clones it, less what install.sh never reads (the tests, the
# benchmarks, CI, the image and VM scripts): a change there does not rebuild the image, a change
# anywhere else does (docs/ included: install.sh installs two of its pages).
INSTALL_EXCLUDE=(':!tests' ':!bench' ':!.ci' ':!scripts/pivm' ':!scripts/pi-vm.sh' ':!scripts/image'
                 ':!scripts/build-image.sh')
# shellcheck source=../lib/rootfs.sh
. "$REPO/scripts/lib/rootfs.sh"

BUILD_MOUNTS=()
CHILD=""


build_cleanup() {
    local m
    [ -z "$CHILD" ] || { kill_tree "$CHILD"; wait "$CHILD" 2>/dev/null || true; }
    for m in "${BUILD_MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    BUILD_MOUNTS=()
    # a *.tmp folder is never a finished build: drop it (after the mounts, so rm stays inside)
    [ -z "${BUILD_TMP:-}" ] || rm -rf --one-file-system "$BUILD_TMP"
}


hash_files() { (cd "$REPO" && xargs -0 sha256sum | sha256sum | cut -c1-16); }

base_key() {
    { echo "$SUITE $MIRROR $BASE_PACKAGES $INITRD_MODULES"; sed -n '/^build_base()/,/^}/p' "$REPO/scripts/pivm/build.sh"; } \
        | sha256sum | cut -c1-16
}

image_key() {
    { echo "$(base_key)"
      install_files | hash_files
      (cd "$REPO/scripts" && sha256sum pivm/build.sh lib/rootfs.sh pivm/pivm-agent.service); } | sha256sum | cut -c1-16
}


build_base() {
    local dest=$1 root=$1.tmp/root
    BUILD_TMP=$1.tmp
    rm -rf --one-file-system "$BUILD_TMP"
    mkdir -p "$BUILD_TMP"
    log "build: Debian $SUITE arm64 root with mmdebstrap under qemu-user (about 4 minutes)"
    # The initramfs settings must be there before linux-image's postinst runs update-initramfs.
    in_background mmdebstrap --mode=root --architectures=arm64 --variant=minbase --include="$BASE_PACKAGES" \
        --aptopt='Acquire::Languages "none"' --dpkgopt=force-unsafe-io \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"' \
        --essential-hook='echo MODULES=list > "$1/etc/initramfs-tools/conf.d/pivm.conf"' \
        --essential-hook="printf '%s\n' $INITRD_MODULES > \"\$1/usr/share/initramfs-tools/modules.d/pivm\"" \
        "$SUITE" "$root" "$MIRROR" >&2 || die "build: mmdebstrap failed (see above)"
    ls "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* >/dev/null 2>&1 \
        || die "build: no kernel or initrd in $root/boot"
    mv "$BUILD_TMP" "$dest"
    BUILD_TMP=""
}

# playbach installed as a Pi user would (the booted VM has no network, so pip runs now), then
# checked: the page's unit and token, and no compiler in the image.
install_playbach() {
    local root=$1 f
    install_sh_in_root "$root" --with-web
    [ -L "$root/etc/systemd/system/multi-user.target.wants/playbach-web.service" ] \
        || die "install: install.sh --with-web did not enable playbach-web.service in the image"
    [ "$(stat -c %a "$root/etc/playbach/web-token" 2>/dev/null)" = 600 ] \
        || die "install: install.sh --with-web did not write /etc/playbach/web-token (mode 0600)"
    # a Pi has no compiler: nothing install.sh did may have needed (or brought) one
    for f in gcc cc c++ aarch64-linux-gnu-gcc; do
        [ ! -e "$root/usr/bin/$f" ] || die "install: $f is in the image: install.sh must not need a compiler"
    done
}

# What the image runs: its Python (the venv's), and where rtmidi comes from (Debian's package or
# pip's wheel in the venv): the `python` and `suite` of the report, and build.json's record.
python_facts() {
    local root=$1 venv=$1/opt/playbach/venv python rtmidi
    python=$(sed -n 's/^version *= *//p' "$venv/pyvenv.cfg")
    rtmidi=$(cd "$venv" && ls -d lib/python3*/site-packages/python_rtmidi-*.dist-info 2>/dev/null)
    if [ -n "$rtmidi" ]; then
        rtmidi="pip wheel in the venv (${rtmidi##*/})"
    else
        rtmidi=$(cd "$root/usr/lib/python3/dist-packages" && ls -d python_rtmidi-* 2>/dev/null)
        [ -n "$rtmidi" ] || die "install: no python-rtmidi in the venv nor from Debian"
        rtmidi="Debian python3-rtmidi ($rtmidi)"
    fi
    echo "\"suite\": \"$SUITE\", \"python\": \"$python\", \"rtmidi\": \"$rtmidi\","
}

# Test-only additions; the product's own files stay as install.sh left them, except the one
# edit a user with this synth would make: its name in `port =` (see docs/appliance.md).
add_test_layer() {
    local root=$1 f
    # /opt/pivm stays empty here: the driver writes the agent into each run's copy of the disk
    mkdir -p "$root/opt/pivm" "$root/var/lib/pivm" "$root/var/log/journal"
    install -m 0644 "$REPO/scripts/pivm/pivm-agent.service" "$root/etc/systemd/system/"
    systemctl --root="$root" --quiet enable pivm-agent.service
    # nobody logs in, and agetty's vhangup() would cut the agent off the shared serial console
    systemctl --root="$root" --quiet mask serial-getty@ttyAMA0.service getty@tty1.service
    printf '%s\n' dummy_hcd libcomposite usb_f_midi snd_aloop snd_seq snd_seq_midi > "$root/etc/modules-load.d/pivm.conf"
    sed -i 's/^port = .*/port = "PiVM Synth"/' "$root/etc/playbach/config.toml"
    echo "/dev/vda / ext4 rw,noatime 0 0" > "$root/etc/fstab"
    echo pivm > "$root/etc/hostname"
    # a fixed machine id: no first-boot presets, and one journal across the reboot check
    python3 -c 'import uuid; print(uuid.uuid4().hex)' > "$root/etc/machine-id"
}

build_image() {
    local dest=$1 base=$2 root
    BUILD_TMP=$1.tmp
    rm -rf --one-file-system "$BUILD_TMP"
    mkdir -p "$BUILD_TMP"
    root=$BUILD_TMP/root
    log "build: image layer (copy of the base root, playbach installed, test agent)"
    cp -a "$base/root" "$root"
    install_playbach "$root"
    add_test_layer "$root"
    local facts; facts=$(python_facts "$root")
    cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" "$BUILD_TMP/vmlinuz"
    cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)" "$BUILD_TMP/initrd.img"
    local mb; mb=$(du -sm "$root" | cut -f1)
    # room for the journal, the recorder's log and the agent's files
    mkfs.ext4 -q -F -L pivm -d "$root" "$BUILD_TMP/disk.img" "$((mb * 13 / 10 + 512))M" \
        || die "build: mkfs.ext4 -d failed"
    rm -rf --one-file-system "$root"
    { echo "{$facts \"base\": \"$(basename "$base")\", \"root_mb\": $mb,"
      echo " \"kernel\": \"$(basename "$(ls "$base"/root/boot/vmlinuz-* | sort -V | tail -1)")\"}"; } > "$BUILD_TMP/build.json"
    mv "$BUILD_TMP" "$dest"
    BUILD_TMP=""
}
