#!/bin/sh
# labimg STAND-IN installer: `systemctl reboot` and `systemctl poweroff`
# only (what `labprov install` runs); there is no systemd here.
case "${1:-}" in
    reboot) sync; exec reboot -f ;;
    poweroff) sync; exec poweroff -f ;;
    *) echo "systemctl (labimg stand-in installer): only reboot and poweroff" >&2; exit 1 ;;
esac
