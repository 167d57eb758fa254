#!/usr/bin/env bash
# Install playbach as an appliance: the daemon starts at boot and plays until the power goes.
# For Raspberry Pi OS 64-bit (Debian bookworm/trixie, Python 3.11 or 3.13); any systemd Debian works.
#
#   sudo systemd/install.sh                      install (or update) and start playbach.service
#   sudo systemd/install.sh --with-fluidsynth    ... plus the FluidSynth software synth service
#   sudo systemd/install.sh --with-web           ... plus the control page on the LAN (port 8080, a token;
#                                                kept when run again without the flag)
#   sudo systemd/install.sh --bundle DIR         ... plus your bundle DIR, as /var/lib/playbach/models/NAME
#   sudo systemd/install.sh --uninstall          remove all of it (config, your bundles and takes too)
#   systemd/install.sh --prefix /tmp/root        install into a staging root (tests); no systemctl
#
# What goes where (under --prefix / $DESTDIR when given):
#   /opt/playbach/venv            a venv with the device extra only (numpy, mido, rtmidi, LiteRT; no TensorFlow);
#                                 on the Pi it also sees Debian's python3-rtmidi (docs/appliance.md#python-on-the-pi)
#   /opt/playbach/models/default  the shipped model bundle (models/default), read-only; always the default
#   /opt/playbach/models/events   the shipped event model (models/events: the default before the grid one)
#   /var/lib/playbach/models/NAME a bundle of yours (--bundle DIR, NAME = the folder's name); never
#                                 replaced by a later run without it, listed on the control page
#   /opt/playbach/docs/           appliance.md (the units' Documentation=)
#   /etc/playbach/config.toml     settings; never overwritten once there
#   /etc/systemd/system/          playbach.service, playbach-fluidsynth.service, playbach-web.service
#   /etc/playbach/web-token       the control page's token, mode 0600 (--with-web)
#   /etc/udev/rules.d/            70-playbach.rules (Coral and USB MIDI)
# The service runs as a DynamicUser in the audio group, so no user account is created.
# Running it again is safe: it updates what changed and keeps the config and your bundles.
# The venv and each bundle are built beside the old one and swapped in with one rename, so a
# power cut leaves the old or the new, never neither and never a mix.
set -euo pipefail
# what is written here is read by the service's DynamicUser: root's umask may be 077
umask 022

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${DESTDIR:-}"
SHIPPED="$REPO/models/default"
BUNDLE=""   # --bundle: a bundle of the user's, installed beside the shipped one
CONSTRAINTS="$REPO/systemd/constraints.txt"
PYTHON="${PYTHON:-python3}"
WITH_FLUIDSYNTH=0
WITH_WEB=0
UNINSTALL=0

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

while (($#)); do
    case "$1" in
        --prefix) ROOT="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) ROOT="${1#*=}"; shift ;;
        --bundle) BUNDLE="${2:?--bundle needs a folder}"; shift 2 ;;
        --bundle=*) BUNDLE="${1#*=}"; shift ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --with-fluidsynth) WITH_FLUIDSYNTH=1; shift ;;
        --with-web) WITH_WEB=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option '$1'" >&2; usage 2 ;;
    esac
done

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    [ "$ROOT" != / ] || ROOT=""
fi
LIVE=0  # installing into the running system: systemctl, udevadm and apt-get are used
if [ -z "$ROOT" ]; then
    LIVE=1
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0), or give --prefix DIR to stage into a folder"
fi

OPT="$ROOT/opt/playbach"
ETC="$ROOT/etc/playbach"
# the service's StateDirectory=: a DynamicUser's lives in /var/lib/private, linked from /var/lib
STATE="$ROOT/var/lib/playbach"
UNIT_DIR="$ROOT/etc/systemd/system"
RULES_DIR="$ROOT/etc/udev/rules.d"
UNITS=(playbach.service playbach-fluidsynth.service playbach-web.service)
# a Pi that has the control page keeps it when install.sh runs again (to update) without the flag:
# a reinstall keeps what is installed, as it keeps the config (and pip need not run offline)
if ((!WITH_WEB && !UNINSTALL)) && [ -s "$ETC/web-token" ]; then WITH_WEB=1; fi
EXTRAS=device
((WITH_WEB)) && EXTRAS=device,web
RULES=70-playbach.rules

systemd_running() { [ "$LIVE" -eq 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# systemctl enable/disable: on the live system, or offline into the staging root
# (`systemctl --root` only writes the .wants symlinks, which is all enabling is).
systemctl_() {
    if [ "$LIVE" -eq 1 ]; then
        command -v systemctl >/dev/null && systemctl "$@"
    elif command -v systemctl >/dev/null; then
        systemctl --root="$ROOT" --quiet "$@"
    fi
}

# Remove a folder's empty parents up to (not including) the staging root; never on a live system.
prune() {
    [ "$LIVE" -eq 0 ] || return 0
    local d="$1"
    while [ "$d" != "$ROOT" ] && [ -d "$d" ] && rmdir "$d" 2>/dev/null; do d="$(dirname "$d")"; done
}

uninstall() {
    if systemd_running; then
        systemctl disable --now "${UNITS[@]}" 2>/dev/null || true
    elif [ "$LIVE" -eq 0 ]; then
        systemctl_ disable "${UNITS[@]}" 2>/dev/null || true
    fi
    for unit in "${UNITS[@]}"; do rm -f "$UNIT_DIR/$unit"; done
    rm -f "$RULES_DIR/$RULES"
    rm -rf "$OPT" "$ETC"
    # DynamicUser's StateDirectory= lives in /var/lib/private with a symlink beside it
    rm -rf "$ROOT/var/lib/private/playbach" "$ROOT/var/lib/playbach"
    if systemd_running; then
        systemctl daemon-reload
        systemctl reset-failed "${UNITS[@]}" 2>/dev/null || true
    fi
    if [ "$LIVE" -eq 1 ] && command -v udevadm >/dev/null; then udevadm control --reload || true; fi
    for d in "$UNIT_DIR/multi-user.target.wants" "$UNIT_DIR" "$RULES_DIR" "$ROOT/opt" \
             "$ROOT/var/lib/private" "$ROOT/var/lib"; do prune "$d"; done
    say "removed playbach${ROOT:+ from $ROOT}"
}

# --- system packages (live install only) ------------------------------------------------
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

check_python() {
    command -v "$PYTHON" >/dev/null || die "no '$PYTHON' (give --python PATH)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); playbach needs Python 3.11 or newer"
    local release=""
    [ ! -r "$ROOT/etc/os-release" ] || release="$(. "$ROOT/etc/os-release" && echo "${PRETTY_NAME:-}")"
    say "$("$PYTHON" -V 2>&1)${release:+ on $release}"
}

# --- the venv: the device extra only --------------------------------------------------
# A hash of the package's sources decides whether pip runs again (idempotent and fast).
# On the Pi (a live install) the venv sees Debian's packages (--system-site-packages): python-rtmidi
# has no wheel for every Python that Raspberry Pi OS ships (none for 3.13), and the Pi has no
# compiler, so Debian's python3-rtmidi, built for this Python and this ALSA, is used where its
# version is enough; pip fetches only what Debian lacks or has too old. A staging root (--prefix)
# gets a self-contained venv: the host's own packages are not the Pi's.
# setup.cfg as the Pi installs it: without the trainer and the converter, which run on a desktop
# (with TensorFlow) and never here; `playbach train` on the Pi says so (playbach/cli.py).
pi_setup_cfg() {
    grep -Ev '^[[:space:]]+playbach\.(trainer|convert)([[:space:]]|=|$)' "$REPO/setup.cfg"
}

# The Pi's code folders, as its setup.cfg's package_dir names them (a folder added there is
# copied and hashed without touching this script).
code_dirs() {
    pi_setup_cfg | "$PYTHON" -c 'import configparser, sys
c = configparser.ConfigParser(); c.read_string(sys.stdin.read())
print(" ".join(sorted({line.split("=")[1].strip() for line in c["options"]["package_dir"].splitlines() if "=" in line})))'
}

source_hash() {
    # shellcheck disable=SC2046 # folder names without spaces, by construction
    (cd "$REPO" && find $(code_dirs) \( -name '*.py' -o -path '*/static/*' \) -type f -print0 | sort -z \
        | xargs -0 cat setup.cfg pyproject.toml systemd/constraints.txt | sha256sum | cut -d' ' -f1)
}

# --- swapping a folder in ----------------------------------------------------------------
# What is being built lies in a .new folder beside its destination (the same filesystem, so a
# rename can move it); the EXIT trap removes these folders, whatever a failed run left there.
STAGING=("$OPT/.new" "$OPT/models/.new" "$STATE/models/.new")
staging_for() {   # DEST -> a fresh, empty path in .new beside DEST
    local dir
    dir="$(dirname "$1")/.new"
    mkdir -p "$dir"
    rm -rf "${dir:?}/$(basename "$1")"
    echo "$dir/$(basename "$1")"
}

# Put the folder NEW at DEST in one step: renameat2(RENAME_EXCHANGE) swaps the two names, so a
# power cut leaves the old or the new there, never neither; the old one, now at NEW, is removed.
# Flushed before (the new content reaches the disk before its name does) and after.
swap_in() {   # NEW DEST
    local new="$1" dest="$2"
    sync -f "$new"
    if [ ! -e "$dest" ]; then
        mv -T "$new" "$dest"
    elif ! "$PYTHON" - "$new" "$dest" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
new, dest = (os.fsencode(p) for p in sys.argv[1:3])
if libc.renameat2(-100, new, -100, dest, 2) != 0:   # AT_FDCWD, RENAME_EXCHANGE
    sys.exit(f"renameat2: {os.strerror(ctypes.get_errno())}")
PY
    then
        # a filesystem without RENAME_EXCHANGE: two renames, a moment with the old one aside
        say "swapping $dest in two renames"
        mv -T "$dest" "$new.old" && mv -T "$new" "$dest" && mv -T "$new.old" "$new"
    fi
    rm -rf "$new"
    sync -f "$dest"
}

# A venv names its own path in its scripts (#!/opt/playbach/venv/bin/python, activate):
# rewrite them when the venv moves (a copy to build in, then back to where it will run).
relocate_venv() {   # VENV FROM TO
    "$PYTHON" - "$@" <<'PY'
import os, re, sys
from pathlib import Path
venv, old, new = sys.argv[1:4]
at = re.compile(re.escape(old.encode()) + rb"(?=[/\"'\s]|$)", re.M)
for path in [*Path(venv, "bin").iterdir(), Path(venv, "pyvenv.cfg")]:
    if path.is_symlink() or not path.is_file():
        continue
    data = path.read_bytes()
    if b"\0" not in data[:1024] and at.search(data):
        mode = path.stat().st_mode
        path.write_bytes(at.sub(new.encode(), data))
        os.chmod(path, mode)
PY
}

# --- the venv: the device extra only --------------------------------------------------------
# Built beside the one in use (a copy of it when it runs, so a code update needs no network),
# checked, then swapped in; the one in use is not touched until then.
install_venv() {
    local venv="$OPT/venv" want new offline=0
    want="$(source_hash) $EXTRAS"
    if [ -f "$venv/.playbach-source" ] && [ "$(cat "$venv/.playbach-source")" = "$want" ] \
            && "$venv/bin/python" -c pass 2>/dev/null; then
        say "venv up to date ($venv)"
        return
    fi
    new="$(staging_for "$venv")"
    # a venv made by an older Python (an OS upgrade) no longer runs: a new one, not a copy
    if "$venv/bin/python" -c pass 2>/dev/null; then
        cp -a "$venv" "$new"
        relocate_venv "$new" "$venv" "$new"
        [ ! -f "$new/.playbach-source" ] || offline=1
    else
        local site=()
        ((LIVE)) && site=(--system-site-packages)
        "$PYTHON" -m venv "${site[@]}" "$new"
    fi
    # build from a copy: pip would otherwise leave build/ and *.egg-info in the checkout
    local src="$WORK/src"
    mkdir -p "$src"
    cp -R "$REPO/pyproject.toml" "$REPO/README.md" "$src/"
    pi_setup_cfg >"$src/setup.cfg"
    for d in $(code_dirs); do cp -R "$REPO/$d" "$src/"; done
    find "$src" -name __pycache__ -prune -exec rm -rf {} +
    pip_install "$new" "$src[$EXTRAS]" "$offline" "$venv"
    if "$new/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("tensorflow") is None)'; then
        die "TensorFlow ended up in $venv; the device extra must not pull it in"
    fi
    "$new/bin/playbach" play --help >/dev/null || die "the new $venv/bin/playbach does not run"
    echo "$want" >"$new/.playbach-source"
    relocate_venv "$new" "$new" "$venv"
    swap_in "$new" "$venv"
}

# An update of playbach's own code needs no network: every dependency is in the venv already and
# the setuptools kept there builds the package (--no-index, no build isolation). A new venv or a
# new dependency goes to PyPI, and only for what is not installed (binary wheels only: no compiler).
# Either way at the versions pinned in systemd/constraints.txt.
pip_install() {
    local venv="$1" req="$2" offline="$3" shown="$4"
    local pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS")
    if ((offline)) && "${pip[@]}" --no-index --no-build-isolation "$req" 2>"$WORK/pip-offline.log"; then
        say "updated the venv from what it holds (no network) ($shown)"
        return
    fi
    say "installing the device extra into $shown (pip)"
    "${pip[@]}" --only-binary=:all: "setuptools>=64" wheel \
        && "${pip[@]}" --only-binary=:all: --no-build-isolation "$req" \
        || die "pip could not install the device extra into $shown (the first install, or a new dependency, needs PyPI)"
}

# --- bundles ----------------------------------------------------------------------------------
# Checked as the player checks it (format, every file's size and sha256), by the installed code.
check_bundle() {   # DIR
    "$OPT/venv/bin/python" - "$1" <<'PY' || die "$1: not a bundle the player can load (see above)"
import sys
from playbach.bundle import load_bundle
from playbach.errors import UserError
try:
    load_bundle(sys.argv[1])
except UserError as e:
    sys.exit(f"install.sh: {e}")
PY
}

# A checked bundle copied to DEST (beside, then swapped in), readable by the DynamicUser; nothing is
# written when DEST holds it already.
install_bundle() {   # FROM DEST
    local from="$1" dest="$2" new
    if [ -d "$dest" ] && diff -rq "$from" "$dest" >/dev/null 2>&1; then return 0; fi
    new="$(staging_for "$dest")"
    cp -R "$from" "$new"
    find "$new" -name __pycache__ -prune -exec rm -rf {} +
    chmod -R u=rwX,go=rX "$new"
    mkdir -p "$(dirname "$dest")"
    swap_in "$new" "$dest"
    say "installed the bundle $dest"
}

# The state folder as systemd makes it for a DynamicUser (/var/lib/private/playbach, 0700 above
# it, and the link /var/lib/playbach): made here when a bundle goes in before the first start.
# Its models/ is where the user's bundles go (install.sh --bundle, the page's upload, playbach
# push): group playbach-web and setgid, so the page's service (another DynamicUser, in that group,
# given the folder by BindPaths= in playbach-web.service) can rename a checked bundle in.
state_folder() {
    if [ ! -e "$STATE" ]; then
        mkdir -p "$ROOT/var/lib/private/playbach"
        chmod 0700 "$ROOT/var/lib/private"
        ln -s private/playbach "$STATE"
    fi
    mkdir -p "$STATE/models"
    chmod 2775 "$STATE/models"
    if ((LIVE)); then chgrp playbach-web "$STATE/models"; fi
}

# The user's bundle: into the state folder's models/, under its own name, beside the shipped
# default, which it never replaces (a later run without --bundle leaves both as they are). By the
# page's own install (`playbach push --to FOLDER`): the same names, checks and refusals as an upload.
install_user_bundle() {
    local name
    name="$(basename "$(cd "$BUNDLE" && pwd)")"
    [ "$name" != default ] || die "$BUNDLE: 'default' is the shipped bundle's name; give your folder another name"
    check_bundle "$BUNDLE"
    "$OPT/venv/bin/playbach" push "$BUNDLE" --to "$STATE/models" --replace >/dev/null \
        || die "$BUNDLE: not installed (the reason is above)"
    # the page's service may replace it later (setgid gives new folders the group; these are root's)
    if ((LIVE)); then chgrp -R playbach-web "$STATE/models/$name"; fi
    say "your bundle: /var/lib/playbach/models/$name (the shipped default stays /opt/playbach/models/default);" \
        "play it: bundle = \"/var/lib/playbach/models/$name\" in /etc/playbach/config.toml, or choose it on the control page"
}

# --- files -----------------------------------------------------------------------------------
install_config() {
    mkdir -p "$ETC"
    local new="$REPO/systemd/config.toml" cfg="$ETC/config.toml"
    if [ ! -f "$cfg" ]; then
        install -m 0644 "$new" "$cfg"
        say "wrote $cfg"
    elif cmp -s "$new" "$cfg"; then
        rm -f "$cfg.dist"
    else
        install -m 0644 "$new" "$cfg.dist"
        say "kept your $cfg (the shipped default is beside it as config.toml.dist)"
    fi
}

install_units() {
    mkdir -p "$UNIT_DIR" "$RULES_DIR" "$OPT/docs"
    for unit in "${UNITS[@]}"; do install -m 0644 "$REPO/systemd/$unit" "$UNIT_DIR/$unit"; done
    install -m 0644 "$REPO/systemd/$RULES" "$RULES_DIR/$RULES"
    install -m 0644 "$REPO/docs/appliance.md" "$OPT/docs/appliance.md"
    install -m 0644 "$REPO/docs/control.md" "$OPT/docs/control.md"
}

# The control page's token: made once, kept after; 0600 and root's on every run (a copy by hand or
# an editor may have left it readable; the unit hands the service its own copy).
install_token() {
    local token="$ETC/web-token"
    if [ ! -s "$token" ]; then
        (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$token.new")
        mv -f "$token.new" "$token"
        say "wrote $token (mode 0600)"
    fi
    chmod 0600 "$token"
    if ((LIVE)); then chown root:root "$token"; fi
}

start_units() {
    local enable=(playbach.service)
    ((WITH_FLUIDSYNTH)) && enable+=(playbach-fluidsynth.service)
    ((WITH_WEB)) && enable+=(playbach-web.service)
    if [ "$LIVE" -eq 0 ]; then
        systemctl_ enable "${enable[@]}"
        return
    fi
    # only where udevd runs (not in a chroot that builds an SD card image: there it would fail)
    if command -v udevadm >/dev/null && [ -S /run/udev/control ]; then
        udevadm control --reload
        udevadm trigger --subsystem-match=usb --subsystem-match=sound || true
    fi
    if ! systemd_running; then
        # e.g. a chroot building an image: enabling is only symlinks and works offline, so the
        # service still starts on the first boot
        systemctl enable "${enable[@]}"
        say "systemd is not running here: units installed and enabled, not started"
        return
    fi
    systemctl daemon-reload
    systemctl enable "${enable[@]}"
    # --no-block: READY=1 may wait for a synth that is not plugged in yet
    systemctl restart --no-block "${enable[@]}"
    say "started ${enable[*]}; follow it with: journalctl -u playbach -f"
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK" "${STAGING[@]}"' EXIT

if ((UNINSTALL)); then
    uninstall
    exit 0
fi

check_python
if [ "$LIVE" -eq 1 ]; then
    # python3-rtmidi: Debian's build for this Python and ALSA (python-rtmidi has no wheel for
    # every Python Pi OS ships, and the Pi has no compiler)
    apt_install python3-venv python3-rtmidi
    if ((WITH_FLUIDSYNTH)); then
        # any General MIDI soundfont the unit's default path points to will do (e.g. the 6 MB
        # timgm6mb-soundfont); fluid-soundfont-gm (140 MB) only when there is none
        apt_install fluidsynth
        [ -e /usr/share/sounds/sf2/default-GM.sf2 ] || apt_install fluid-soundfont-gm
    fi
    getent group audio >/dev/null || groupadd --system audio
    # the control socket's group (playbach.service's SupplementaryGroups= needs it to exist)
    getent group playbach-web >/dev/null || groupadd --system playbach-web
fi
[ -f "$SHIPPED/bundle.json" ] || die "$SHIPPED: the shipped bundle is missing from this checkout"
if [ -n "$BUNDLE" ]; then
    [ -f "$BUNDLE/bundle.json" ] || die "$BUNDLE: not a model bundle (no bundle.json); give --bundle DIR"
    # the checkout's own models/default is the shipped bundle, not one of the user's
    [ "$(cd "$BUNDLE" && pwd -P)" != "$(cd "$SHIPPED" && pwd -P)" ] || BUNDLE=""
fi
mkdir -p "$OPT"
install_venv
check_bundle "$SHIPPED"
install_bundle "$SHIPPED" "$OPT/models/default"
if [ -f "$REPO/models/events/bundle.json" ]; then install_bundle "$REPO/models/events" "$OPT/models/events"; fi
state_folder
if [ -n "$BUNDLE" ]; then install_user_bundle; fi
install_config
install_units
if ((WITH_WEB)); then install_token; fi
start_units
say "installed playbach${ROOT:+ into $ROOT}"
if ((WITH_WEB)); then
    say "control page: http://$( (hostname -I 2>/dev/null || echo localhost) | awk '{print $1}'):8080/ (its token: sudo cat /etc/playbach/web-token; another port: sudo systemctl edit playbach-web)"
fi
