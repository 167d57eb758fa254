#!/usr/bin/env bash
# Set up a fresh Debian machine for playbach: system packages (JACK, FluidSynth, a small
# soundfont, systemd-analyze, Chromium) and a venv at .venv with the trainer, device, web and dev extras.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# chromium + chromium-driver: the control page's browser test (Selenium drives Debian's own
# Chromium through /usr/bin/chromedriver; nothing is downloaded when the tests run)
APT_PACKAGES=(jackd2 fluidsynth timgm6mb-soundfont python3-venv python3-dev systemd chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}" >&2
    # jackd2 asks whether to enable realtime priority; answer no, non-interactively
    echo "jackd2 jackd/tweak_rt_limits boolean false" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.playbach-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[trainer,device,web,dev]"
    touch "$stamp"
fi
