#!/bin/sh
# Boot test only (scripts/build-image.sh --boot-test puts it on a copy of the image, never in the
# image itself): once the player waits for a synth (QEMU's raspi4b has no USB), say on the console
# what the first boot did, then power off.
out=/dev/console
say() { echo "BOOTTEST $*" > "$out"; }
i=0
until line=$(journalctl -b -u playbach.service -o short-monotonic --no-pager | grep -m1 "no MIDI output port matching"); do
    i=$((i + 1))
    [ $((i % 30)) -ne 0 ] || say "still waiting: $(systemctl is-active playbach.service) $(systemctl show -P StatusText playbach.service)"
    sleep 2
done
say "waiting_s=$(echo "$line" | sed 's/^\[ *\([0-9.]*\)\].*/\1/')"
say "hostname=$(hostname)"
say "token_mode=$(stat -c %a /etc/playbach/web-token 2>/dev/null || echo none)"
say "token_chars=$(tr -d '\n' < /etc/playbach/web-token 2>/dev/null | wc -c)"
say "firstboot=$(journalctl -b -u playbach-firstboot.service -o cat --no-pager | grep -m1 'playbach.toml:')"
say "config_bpm=$(grep -m1 '^bpm' /etc/playbach/config.toml)"
say "root_bytes=$(df -B1 --output=size / | tail -1 | tr -d ' ')"
say "disk_bytes=$(lsblk -bdno SIZE "/dev/$(lsblk -no PKNAME "$(findmnt -no SOURCE /)")")"
say "ssh=$(systemctl is-active ssh.service)"
say "avahi=$(systemctl is-active avahi-daemon.service)"
say "player=$(systemctl is-active playbach.service)"
say "web=$(systemctl is-active playbach-web.service)"
say "failed_units=$(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
journalctl -b -p err -o short-monotonic --no-pager | grep -v '^-- ' | while IFS= read -r e; do say "error $e"; done
say "end"
systemctl poweroff
