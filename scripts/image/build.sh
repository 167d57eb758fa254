#!/usr/bin/env bash
# The flashable image's layers (sourced by scripts/build-image.sh, which has set REPO, CACHE, BOARD,
# WITH_WEB, WITH_FLUIDSYNTH, log(), die(), the cleanup trap, and sourced scripts/lib/rootfs.sh:
# binfmt, in_background, kill_tree, chroot_in, install_files):
#
#   base-<key>/root   Debian trixie arm64 as Debian's own Raspberry Pi images make it: linux-image-arm64,
#                     raspi-firmware (the Pi's boot firmware, which copies kernel, initrd and device tree
#                     to /boot/firmware), systemd, avahi, OpenSSH (off), Python 3.13 with Debian's
#                     python3-rtmidi; mmdebstrap under qemu-user, cached, changes only with this file
#   the image         a copy of the base with playbach installed by its own systemd/install.sh,
#                     the boot-time setup (playbach-firstboot.service) and the card's layout:
#                     MBR, FAT32 "RASPIFIRM" (firmware, kernel, initrd, dtb, config.txt, cmdline.txt,
#                     playbach.toml), ext4 "RASPIROOT" (grows to the card at the first boot)

SUITE=trixie
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# image-specs' raspi list (firmware, kernel, ssh, timesyncd, parted's job done by sfdisk), plus what
# playbach needs from Debian (python3-rtmidi: no Python 3.13 wheel on PyPI, and the Pi has no compiler)
# and what makes the Pi reachable as playbach.local (avahi-daemon, libnss-mdns); Ethernet by DHCP.
BASE_PACKAGES=systemd,systemd-sysv,udev,kmod,dbus,linux-image-arm64,raspi-firmware,initramfs-tools,python3,python3-venv,python3-rtmidi,ca-certificates,avahi-daemon,libnss-mdns,openssh-server,fdisk,e2fsprogs,dosfstools,alsa-utils,systemd-timesyncd,ifupdown,dhcpcd-base,iproute2,netbase
FAT_MB=256          # Debian's raspi images: 508 MiB; kernel + initrd + firmware + dtbs are ~70 MiB
FIRST_MB=4          # the FAT partition starts at 4 MiB, as in Debian's images
# The checkout as a Pi user clones it, less what install.sh never reads.
INSTALL_EXCLUDE=(':!tests' ':!bench' ':!.ci')

BUILD_MOUNTS=()

base_key() {
    { echo "$SUITE $MIRROR $BASE_PACKAGES"; sed -n '/^build_base()/,/^}/p' "$REPO/scripts/image/build.sh"; } \
        | sha256sum | cut -c1-16
}

build_base() {
    local dest=$1 root=$1.tmp/root
    BUILD_TMP=$1.tmp
    rm -rf --one-file-system "$BUILD_TMP"
    mkdir -p "$BUILD_TMP"
    log "base: Debian $SUITE arm64 with mmdebstrap under qemu-user (10-30 minutes)"
    # /boot/firmware exists before raspi-firmware's kernel hook runs, as the mounted FAT would
    in_background mmdebstrap --mode=root --architectures=arm64 --variant=minbase \
        --components=main,non-free-firmware --include="$BASE_PACKAGES" \
        --aptopt='Acquire::Languages "none"' --dpkgopt=force-unsafe-io \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --essential-hook='mkdir -p "$1/boot/firmware"' \
        "$SUITE" "$root" "$MIRROR" >&2 || die "base: mmdebstrap failed (see above)"
    compgen -G "$root/boot/vmlinuz-*" >/dev/null || die "base: no kernel in $root/boot"
    mv "$BUILD_TMP" "$dest"
    BUILD_TMP=""
}


# playbach's own installer inside the arm64 root, as the README tells a Pi user (pip fetches the
# aarch64 wheels now, over the build machine's network).
install_playbach() {
    local root=$1 flags=()
    ((WITH_WEB)) && flags+=(--with-web)
    ((WITH_FLUIDSYNTH)) && flags+=(--with-fluidsynth)
    install_sh_in_root "$root" "${flags[@]}"
    install -m 0644 "$REPO/docs/image.md" "$root/opt/playbach/docs/image.md"
    chroot_in "$root" apt-get clean
    rm -rf "$root/root/playbach" "$root/var/lib/apt/lists/"*
}

# What makes it this appliance rather than a Debian: name, network, boot partition, first boot.
configure_root() {
    local root=$1
    echo playbach > "$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tplaybach\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
    printf 'LABEL=RASPIROOT / ext4 rw,noatime 0 1\nLABEL=RASPIFIRM /boot/firmware vfat rw,fmask=0022,dmask=0022 0 2\n' \
        > "$root/etc/fstab"
    mkdir -p "$root/etc/network/interfaces.d"
    printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' > "$root/etc/network/interfaces"
    # dhcpcd writes the name servers here when a network comes; until then avahi's chroot helper
    # needs the file to exist (it logged "chroot.c: open() failed" on a Pi with no network yet)
    : > "$root/etc/resolv.conf"
    install -m 0644 "$REPO/systemd/playbach-firstboot.service" "$root/etc/systemd/system/"
    systemctl --root="$root" --quiet enable playbach-firstboot.service
    # SSH only when the card carries a key (playbach-firstboot); each Pi makes its own host keys
    systemctl --root="$root" --quiet disable ssh.service ssh.socket 2>/dev/null || true
    rm -f "$root"/etc/ssh/ssh_host_*
    # each Pi its own token (playbach-firstboot makes it) and its own machine id (systemd at first boot)
    rm -f "$root/etc/playbach/web-token" "$root/var/lib/dbus/machine-id"
    : > "$root/etc/machine-id"
    # the boot files: raspi-firmware's kernel hook writes config.txt and cmdline.txt and copies the
    # kernel, initrd and device trees to /boot/firmware. In a chroot it cannot see the board, so what
    # it would detect on a Pi 4 is said here: root by label, the header's serial console (mini UART,
    # ttyS1) after HDMI's, and no cma= (which can stop a Pi 4 booting)
    sed -i 's/^#\?ROOTPART=.*/ROOTPART="LABEL=RASPIROOT"/; s/^#\?CONSOLES=.*/CONSOLES="tty0 ttyS1,115200"/; s/^#\?CMA=.*/CMA=0/' \
        "$root/etc/default/raspi-firmware"
    local kver; kver=$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')
    # /proc: the hook's ischroot needs it to tell it runs in a chroot (no mounted /boot/firmware)
    mount -t proc proc "$root/proc" && BUILD_MOUNTS=("$root/proc" "${BUILD_MOUNTS[@]}")
    chroot_in "$root" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "$kver" >&2 \
        || die "image: raspi-firmware's hook failed"
    umount "$root/proc"
    BUILD_MOUNTS=()
    grep -q 'root=LABEL=RASPIROOT' "$root/boot/firmware/cmdline.txt" || die "image: cmdline.txt has no root=LABEL=RASPIROOT"
    [ -f "$root/boot/firmware/broadcom/bcm2711-rpi-4-b.dtb" ] || [ -f "$root/boot/firmware/bcm2711-rpi-4-b.dtb" ] \
        || die "image: no bcm2711-rpi-4-b.dtb in /boot/firmware"
    { cat "$REPO/scripts/image/playbach.toml.head" "$root/etc/playbach/config.toml"; } \
        > "$root/boot/firmware/playbach.toml"
}

# The card: MBR, FAT32 then ext4, each made as a file and copied into place (no loop device).
assemble() {
    local root=$1 out=$2 work=$3 root_mb
    log "image: FAT32 boot partition (${FAT_MB} MiB) and ext4 root"
    rm -f "$work/fat.img" "$work/root.img"
    truncate -s "${FAT_MB}M" "$work/fat.img"
    mkfs.vfat -F 32 -n RASPIFIRM "$work/fat.img" >/dev/null || die "image: mkfs.vfat failed"
    MTOOLS_SKIP_CHECK=1 mcopy -s -i "$work/fat.img" "$root"/boot/firmware/* ::/ || die "image: mcopy to the FAT failed"
    mv "$root/boot/firmware" "$work/firmware" && mkdir "$root/boot/firmware"   # the mount point stays empty
    root_mb=$(du -sm "$root" | cut -f1)
    root_mb=$((root_mb * 115 / 100 + 256))   # room for the first boot's journal; it grows to the card
    in_background mkfs.ext4 -q -F -L RASPIROOT -d "$root" "$work/root.img" "${root_mb}M" || die "image: mkfs.ext4 -d failed"
    rm -rf "$root/boot/firmware" && mv "$work/firmware" "$root/boot/firmware"
    truncate -s "$((FIRST_MB + FAT_MB + root_mb))M" "$out"
    sfdisk --quiet "$out" <<EOF || die "image: sfdisk failed"
label: dos
start=$((FIRST_MB * 2048)), size=$((FAT_MB * 2048)), type=c
start=$(((FIRST_MB + FAT_MB) * 2048)), type=83
EOF
    dd if="$work/fat.img" of="$out" bs=1M seek="$FIRST_MB" conv=notrunc,sparse status=none || die "image: dd failed"
    in_background dd if="$work/root.img" of="$out" bs=1M seek="$((FIRST_MB + FAT_MB))" conv=notrunc,sparse status=none \
        || die "image: dd failed"
    rm -f "$work/fat.img" "$work/root.img"
    chmod 0644 "$out"   # mktemp made it 0600; an image is for anyone to flash
}
