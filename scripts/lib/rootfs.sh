# Building an arm64 Debian root from this checkout: the pieces the emulated Pi (scripts/pivm/build.sh)
# and the flashable image (scripts/image/build.sh) share. Sourced; the caller sets REPO,
# INSTALL_EXCLUDE (git pathspecs of what stays out of the root), CHILD and a die() of its own.

# arm64 programs in the build root run under qemu-user through binfmt_misc (F flag: the
# interpreter is opened at registration, so no copy is needed inside the root). As the Pi 4's own
# CPU, a Cortex-A72: qemu-user's default ("max") emulates pointer authentication, which trixie's
# binaries use on every function call (built with -mbranch-protection), and made Python there 15
# times slower than bookworm's; on an A72, as on the Pi, those instructions are no-ops.
export QEMU_CPU=cortex-a72
binfmt() {
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "setup: cannot mount binfmt_misc (qemu-user needs it to build an arm64 root)"
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >&2 \
        || die "setup: update-binfmts --enable qemu-aarch64 failed"
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
}

# Long steps run in the background and are waited for: bash runs a trap only between
# commands, so a foreground mmdebstrap or pip would hold off SIGTERM's cleanup for minutes.
in_background() {
    "$@" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

# A process and everything under it (children first), stopped, and waited for until none is left
# running (up to 30 s, then killed): the caller removes the build folder next, and a process still
# running from it would fail noisily on its vanishing files instead of the one clear error.
tree_pids() { local child; for child in $(pgrep -P "$1"); do tree_pids "$child"; done; echo "$1"; }
running() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
kill_tree() {
    local pids p i left
    pids=$(tree_pids "$1")
    kill $pids 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        left=0
        for p in $pids; do running "$p" && left=1; done
        ((left)) || return 0
        sleep 0.1
    done
    kill -KILL $pids 2>/dev/null || true
}

chroot_in() { chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" "${@:2}"; }

# The files of this checkout that go into the root: tracked and new ones, not ignored ones,
# present in the work tree (so uncommitted edits are what gets tested, as with the tests).
install_files() {
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard -- . "${INSTALL_EXCLUDE[@]}" \
        | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done | sort -z)
}

# playbach's own installer inside the arm64 root, as the README tells a Pi user, with the build
# machine's network (pip fetches the aarch64 wheels now). An HTTPS-inspecting proxy's CA, where
# the host has one, is appended to the bundle pip reads (update-ca-certificates forks per
# certificate: minutes under qemu-user) and taken out again: the root does not keep it. No /sys:
# the host's x86 CPUs there crash TFLite's cpuinfo under qemu-user (scripts/aarch64.sh).
install_sh_in_root() {   # ROOT [install.sh flags...]
    local root=$1 bundle=$1/etc/ssl/certs/ca-certificates.crt m
    shift
    mount -t proc proc "$root/proc" && BUILD_MOUNTS=("$root/proc" "${BUILD_MOUNTS[@]}")
    mount --bind /dev "$root/dev" && BUILD_MOUNTS=("$root/dev" "${BUILD_MOUNTS[@]}")
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cp "$bundle" "$bundle.build-orig"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cat /usr/local/share/ca-certificates/*.crt >> "$bundle"
    fi
    mkdir -p "$root/root/playbach"
    install_files | (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$root/root/playbach"
    log "systemd/install.sh $* inside the arm64 root (pip under qemu-user, minutes)"
    in_background chroot_in "$root" bash -c "cd /root/playbach && systemd/install.sh $*" >&2 \
        || die "systemd/install.sh $* failed inside the arm64 root (see above)"
    for m in "${BUILD_MOUNTS[@]}"; do umount "$m"; done
    BUILD_MOUNTS=()
    rm -f "$root/etc/resolv.conf"
    mv "$bundle.build-orig" "$bundle"
    [ -L "$root/etc/systemd/system/multi-user.target.wants/playbach.service" ] \
        || die "install.sh did not enable playbach.service in the arm64 root"
}
