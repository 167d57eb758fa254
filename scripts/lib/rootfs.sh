# Building an arm64 Debian root from this checkout: the pieces the emulated Pi (scripts/pivm/build.sh)
# and the flashable image (scripts/image/build.sh) share. Sourced; the caller sets REPO,
# INSTALL_EXCLUDE (git pathspecs of what stays out of the root), CHILD and a die() of its own.

# arm64 programs in the build root run under qemu-user through binfmt_misc (F flag: the
# interpreter is opened at registration, so no copy is needed inside the root).
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

kill_tree() {
    local child
    for child in $(pgrep -P "$1"); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}

chroot_in() { chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "${@:2}"; }

# The files of this checkout that go into the root: tracked and new ones, not ignored ones,
# present in the work tree (so uncommitted edits are what gets tested, as with the tests).
install_files() {
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard -- . "${INSTALL_EXCLUDE[@]}" \
        | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done | sort -z)
}
