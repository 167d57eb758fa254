#!/usr/bin/env bash
# --boot-test (sourced by scripts/build-image.sh after the image is finished): boot a copy of it in
# QEMU's raspi4b machine with the image's own kernel, initrd and device tree from its FAT partition
# and its own root partition, first boot and all. QEMU 9+ has raspi4b; the build machine may be older
# (bookworm: 7.2), so QEMU runs from a Debian trixie root (mmdebstrap, cached) by chroot.
#
# The copy differs from the image in what only a test needs: a card of 4 GiB (QEMU takes SD cards
# of a power of two; the root partition grows into it at the first boot), a playbach.toml with one
# setting changed (bpm = 72: the first boot must copy it), and a test agent unit written into the
# copy's root with debugfs (no mount) that reports on the serial console once the player waits.

HOST_ROOT=$CACHE/trixie-host
# Parts of the Pi 4's device tree that QEMU's raspi4b does not emulate and Debian's kernel would
# fault on (a synchronous external abort at boot): the HDMI block's interrupt controller and clocks,
# and the HDMI and DDC nodes that use them. The test's copy of the dtb marks them disabled, as QEMU
# itself does for the PCIe, Ethernet, RNG and thermal nodes; a real Pi 4 has them all.
QEMU_MISSING_NODES=(/soc/interrupt-controller@7ef00100 /soc/clock@7ef00000 /soc/hdmi@7ef00700
                    /soc/hdmi@7ef05700 /soc/i2c@7ef04500 /soc/i2c@7ef09500)
TEST_CARD_BYTES=$((4 << 30))

build_host_root() {
    [ -x "$HOST_ROOT/usr/bin/qemu-system-aarch64" ] && return 0
    BUILD_TMP=$HOST_ROOT.tmp
    rm -rf --one-file-system "$BUILD_TMP"
    log "boot test: a Debian trixie root with QEMU 10 for raspi4b (mmdebstrap, about 2 minutes)"
    in_background mmdebstrap --variant=apt --include=qemu-system-arm --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' trixie "$BUILD_TMP" "$MIRROR" >&2 \
        || die "boot test: mmdebstrap of the QEMU root failed"
    mv "$BUILD_TMP" "$HOST_ROOT"
    BUILD_TMP=""
}

# shellcheck source=partitions.sh
. "$REPO/scripts/image/partitions.sh"
fat_offset() { partition_offset "$1" 1; }
root_offset() { partition_offset "$1" 2; }

# Kernel, initrd and device tree as the Pi's firmware would load them (config.txt names them).
extract_boot_files() {
    local card=$1 dir=$2 fat kernel initrd
    fat="$card@@$(fat_offset "$card")"
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$fat" ::config.txt ::cmdline.txt "$dir/" || die "boot test: no config.txt/cmdline.txt on the FAT"
    kernel=$(awk -F= '/^kernel=/ {print $2}' "$dir/config.txt" | tail -1)
    initrd=$(awk '/^initramfs / {print $2}' "$dir/config.txt" | tail -1)
    [ -n "$kernel" ] && [ -n "$initrd" ] || die "boot test: config.txt names no kernel= or initramfs"
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$fat" "::$kernel" "$dir/vmlinuz" && MTOOLS_SKIP_CHECK=1 mcopy -n -i "$fat" "::$initrd" "$dir/initrd.img" \
        || die "boot test: $kernel or $initrd missing on the FAT"
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$fat" ::bcm2711-rpi-4-b.dtb "$dir/board.dtb" 2>/dev/null \
        || MTOOLS_SKIP_CHECK=1 mcopy -n -i "$fat" ::broadcom/bcm2711-rpi-4-b.dtb "$dir/board.dtb" \
        || die "boot test: no bcm2711-rpi-4-b.dtb on the FAT"
    local node
    for node in "${QEMU_MISSING_NODES[@]}"; do
        fdtput -t s "$dir/board.dtb" "$node" status disabled || die "boot test: fdtput $node failed"
    done
    # Where the card is: QEMU's raspi4b puts its SD card on the Arasan SDHCI (mmc@7e300000, the
    # controller a real Pi 4 uses for its Wi-Fi chip), never on EMMC2 (mmc@7e340000, the card slot of a
    # real Pi 4), which it emulates with nothing attached. The Arasan node waits for the Wi-Fi's power
    # sequence, whose reset line is on the firmware's GPIO expander (not emulated: its probe fails), so
    # it would never probe and the root would never be found. The test's dtb drops that dependency
    # and disables the empty EMMC2; on a real Pi 4 the image's own dtb is used unchanged.
    fdtput -d "$dir/board.dtb" /soc/mmc@7e300000 mmc-pwrseq || die "boot test: fdtput -d /soc/mmc@7e300000 mmc-pwrseq failed"
    fdtput -t s "$dir/board.dtb" /emmc2bus/mmc@7e340000 status disabled || die "boot test: fdtput /emmc2bus/mmc@7e340000 failed"
}

make_test_card() {
    local image=$1 dir=$2 card=$2/card.img agent_dir=$REPO/scripts/image
    cp --sparse=always "$image" "$card"
    truncate -s "$TEST_CARD_BYTES" "$card"
    # the user's edit before the first boot: one setting, on the FAT, as a computer would make it
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$card@@$(fat_offset "$card")" ::playbach.toml "$dir/playbach.toml"
    sed -i 's/^bpm = .*/bpm = 72.0/' "$dir/playbach.toml"
    MTOOLS_SKIP_CHECK=1 mcopy -o -n -i "$card@@$(fat_offset "$card")" "$dir/playbach.toml" ::playbach.toml \
        || die "boot test: cannot write playbach.toml to the test card"
    debugfs -w -f - "$card?offset=$(root_offset "$card")" >/dev/null 2>"$dir/debugfs.log" <<EOF
cd /usr/local/sbin
write $agent_dir/boottest-agent.sh playbach-boottest
cd /etc/systemd/system
write $agent_dir/boottest-agent.service playbach-boottest.service
cd /etc/systemd/system/multi-user.target.wants
symlink playbach-boottest.service /etc/systemd/system/playbach-boottest.service
EOF
    debugfs -R "stat /etc/systemd/system/multi-user.target.wants/playbach-boottest.service" \
        "$card?offset=$(root_offset "$card")" >/dev/null 2>&1 || die "boot test: debugfs could not add the agent ($(cat "$dir/debugfs.log"))"
}

boot_test() {
    local image=$1 json=$2 work=$3 build_seconds=$4 dir rc=0
    dir=$work/boot
    mkdir -p "$dir"
    build_host_root
    make_test_card "$image" "$dir"
    extract_boot_files "$dir/card.img" "$dir"
    mkdir -p "$HOST_ROOT/card" "$HOST_ROOT/dev" "$HOST_ROOT/proc"
    mount --bind "$dir" "$HOST_ROOT/card" && BUILD_MOUNTS=("$HOST_ROOT/card" "${BUILD_MOUNTS[@]}")
    mount --bind /dev "$HOST_ROOT/dev" && BUILD_MOUNTS=("$HOST_ROOT/dev" "${BUILD_MOUNTS[@]}")
    mount -t proc proc "$HOST_ROOT/proc" && BUILD_MOUNTS=("$HOST_ROOT/proc" "${BUILD_MOUNTS[@]}")
    log "boot test: qemu-system-aarch64 -M raspi4b (TCG), up to ${BOOT_TEST_TIMEOUT:-3600} s"
    in_background python3 "$REPO/scripts/image/boottest.py" --host-root "$HOST_ROOT" --card-dir "$dir" \
        --inside /card --image "$image" --json "$json" --build-seconds "$build_seconds" \
        --timeout "${BOOT_TEST_TIMEOUT:-3600}" || rc=$?
    # the download's size: FILE.img.xz, made after the boot so it does not slow the emulation
    log "boot test: xz -6 of the image ($image.xz)"
    PARTIAL=$image.xz.partial
    in_background xz -T0 -6 -c "$image" > "$PARTIAL" || die "xz of the image failed"
    mv -f "$PARTIAL" "$image.xz"
    PARTIAL=""
    python3 "$REPO/scripts/image/boottest.py" --add-xz "$image.xz" --json "$json" || rc=2
    return "$rc"
}
