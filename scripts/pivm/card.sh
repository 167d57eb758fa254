#!/usr/bin/env bash
# pi-vm.sh --from-image CARD: the flashed image's own root, booted under -M virt with the USB synth
# (sourced by scripts/pi-vm.sh, which has set REPO, log(), die() and the cleanup trap).
#
# QEMU's raspi4b machine boots the card as a Pi 4 would (build-image.sh --boot-test) but has no
# USB, so the checks that need the synth run here: the card's root partition as the virtio disk,
# its FAT partition as a second disk (so fstab, the first boot and playbach.toml work as on the Pi),
# and the kernel and initrd from the root's /boot (the same Debian arm64 kernel the Pi boots).
# Only what the test needs is added, with debugfs and mtools (no mount): the agent's unit, the
# gadget's modules, the consoles' gettys masked, /opt/pivm; and the one edit a user with this synth
# makes on a computer before the first boot: its name in playbach.toml's `port`. The root is grown
# as the first boot grows it on a card (the Pi's own growing is checked by the raspi4b boot test).

# shellcheck source=../image/partitions.sh
. "$REPO/scripts/image/partitions.sh"
CARD_ROOT_GROWTH=1G

# a file's bytes from the ext4 image, or nothing
root_cat() { debugfs -R "cat $2" "$1" 2>/dev/null; }

card_test_layer() {   # DISK WORK
    local disk=$1 work=$2 err
    printf '%s\n' dummy_hcd libcomposite usb_f_midi snd_aloop snd_seq snd_seq_midi > "$work/pivm.conf"
    # mkdir of a folder that is there already only complains; every result is read back below
    err=$(debugfs -w -f - "$disk" 2>&1 >/dev/null <<EOF
mkdir /opt/pivm
mkdir /var/lib/pivm
mkdir /var/log/journal
mkdir /etc/modules-load.d
cd /etc/modules-load.d
write $work/pivm.conf pivm.conf
sif pivm.conf mode 0100644
cd /etc/systemd/system
write $REPO/scripts/pivm/pivm-agent.service pivm-agent.service
sif pivm-agent.service mode 0100644
mkdir /etc/systemd/system/sysinit.target.wants
symlink /etc/systemd/system/sysinit.target.wants/pivm-agent.service /etc/systemd/system/pivm-agent.service
symlink /etc/systemd/system/serial-getty@ttyAMA0.service /dev/null
symlink /etc/systemd/system/getty@tty1.service /dev/null
EOF
    ) || true
    local path
    for path in /opt/pivm /var/lib/pivm /etc/modules-load.d/pivm.conf /etc/systemd/system/pivm-agent.service \
                /etc/systemd/system/sysinit.target.wants/pivm-agent.service /etc/systemd/system/serial-getty@ttyAMA0.service; do
        debugfs -R "stat $path" "$disk" >/dev/null 2>&1 || die "from-image: debugfs could not add $path ($err)"
    done
}

card_user_edit() {   # BOOT_FAT WORK: the synth's name in playbach.toml, as its owner would write it
    local fat=$1 work=$2
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$fat" ::playbach.toml "$work/playbach.toml" || die "from-image: no playbach.toml on the card's FAT"
    grep -q '^port = ' "$work/playbach.toml" || die "from-image: the card's playbach.toml has no 'port = ' line"
    sed -i 's/^port = .*/port = "PiVM Synth"/' "$work/playbach.toml"
    MTOOLS_SKIP_CHECK=1 mcopy -o -n -i "$fat" "$work/playbach.toml" ::playbach.toml || die "from-image: cannot write playbach.toml"
}

card_facts() {   # DISK CARD: build.json's record, as build.sh's python_facts writes it for an image of its own
    local disk=$1 card=$2 python rtmidi
    python=$(root_cat "$disk" /opt/playbach/venv/pyvenv.cfg | sed -n 's/^version *= *//p')
    [ -n "$python" ] || die "from-image: $card has no /opt/playbach/venv (was playbach installed?)"
    rtmidi=$(debugfs -R "ls -p /usr/lib/python3/dist-packages" "$disk" 2>/dev/null | tr '/' '\n' | grep -m1 '^python_rtmidi-' || true)
    rtmidi=${rtmidi:+Debian python3-rtmidi ($rtmidi)}
    # The card carries no checkout (an image is updated by flashing a newer one) and, built as the
    # README says, no FluidSynth: the check that reinstalls with --with-fluidsynth cannot apply
    # (both suites run it); with --with-fluidsynth the card would run FluidSynth from boot.
    printf '{"suite": "trixie", "python": "%s", "rtmidi": "%s", "from_card": "%s", "card_bytes": %s, "kernel": "%s", %s}\n' \
        "$python" "${rtmidi:-pip wheel in the venv}" "$(basename "$card")" "$(stat -c %s "$card")" "$3" \
        '"not_applicable": {"fluidsynth": "a card has no checkout to reinstall from; install.sh --with-fluidsynth is checked in both suites"}'
}

# DEST/disk.img (the root partition, grown), DEST/boot.img (the FAT), vmlinuz, initrd.img, build.json
card_image() {   # DEST CARD
    local dest=$1 card=$2 tmp=$1.tmp kernel
    [ -f "$card" ] || die "from-image: $card: no such image (scripts/build-image.sh --board pi4 --out FILE.img)"
    sfdisk -d "$card" >/dev/null 2>&1 || die "from-image: $card: no partition table (not a playbach card image)"
    rm -rf --one-file-system "$tmp" "$dest"
    BUILD_TMP=$tmp
    mkdir -p "$tmp"
    log "from-image: the root and boot partitions of $card"
    dd if="$card" of="$tmp/boot.img" bs=1M iflag=skip_bytes,count_bytes status=none conv=sparse \
        skip="$(partition_offset "$card" 1)" count="$(partition_bytes "$card" 1)" || die "from-image: dd of the FAT failed"
    dd if="$card" of="$tmp/disk.img" bs=1M iflag=skip_bytes,count_bytes status=none conv=sparse \
        skip="$(partition_offset "$card" 2)" count="$(partition_bytes "$card" 2)" || die "from-image: dd of the root failed"
    [ "$(blkid -o value -s LABEL "$tmp/disk.img")" = RASPIROOT ] || die "from-image: $card's second partition is not RASPIROOT"
    [ "$(blkid -o value -s LABEL "$tmp/boot.img")" = RASPIFIRM ] || die "from-image: $card's first partition is not RASPIFIRM"
    truncate -s "+$CARD_ROOT_GROWTH" "$tmp/disk.img"
    e2fsck -fp "$tmp/disk.img" >/dev/null || (($? <= 1)) || die "from-image: e2fsck found $card's root damaged"
    resize2fs "$tmp/disk.img" >/dev/null 2>&1 || die "from-image: resize2fs of the root failed"
    kernel=$(debugfs -R "ls -p /boot" "$tmp/disk.img" 2>/dev/null | tr '/' '\n' | grep '^vmlinuz-' | sort -V | tail -1)
    [ -n "$kernel" ] || die "from-image: no /boot/vmlinuz-* in $card's root"
    debugfs -R "dump /boot/$kernel $tmp/vmlinuz" "$tmp/disk.img" 2>/dev/null
    debugfs -R "dump /boot/initrd.img-${kernel#vmlinuz-} $tmp/initrd.img" "$tmp/disk.img" 2>/dev/null
    [ -s "$tmp/vmlinuz" ] && [ -s "$tmp/initrd.img" ] || die "from-image: cannot read $kernel or its initrd from $card"
    card_test_layer "$tmp/disk.img" "$tmp"
    card_user_edit "$tmp/boot.img" "$tmp"
    card_facts "$tmp/disk.img" "$card" "$kernel" > "$tmp/build.json"
    rm -f "$tmp/pivm.conf" "$tmp/playbach.toml"
    mv "$tmp" "$dest"
    BUILD_TMP=""
}
