# shellcheck shell=sh
# labprov's host agent: the few steps of a deploy that must run on the host
# itself. labprov sends this text over its pinned SSH connection, so nothing
# of labprov is installed on the host and the host needs only what NixOS (or
# nix-darwin) already has: read-only actions run it from stdin (`sh -s --
# probe`), a deploy's actions from /run/labprov/agent-ID.sh, which labprov
# writes first (the rollback timer runs that file). One action per
# connection; output is `key=value` lines for labprov to read; what the
# switch prints goes to stderr.
#
# The order that makes a deploy safe (docs/decisions/0007):
#   arm      a transient systemd timer that re-activates OLD after SECONDS:
#            if labprov never confirms (it was killed, the host's network
#            went away), the host heals itself
#   activate NEW's switch-to-configuration `test` in a transient unit (it
#            survives a restarted sshd or a dropped connection); the boot
#            default does not move
#   confirm  after labprov's checks passed: make NEW the system profile
#            and the boot default, then stop the timer
#   restore  a failed check, activation or confirm: OLD's `test` again (the
#            boot default never moved, or is moved back first, so a reboot
#            also lands on OLD)
# Activate, confirm, restore and previous run in transient units too
# (in_unit), never as children of the SSH session.
set -eu

# The rollback timer runs this file as a transient unit, and NixOS's systemd
# gives such a unit only systemd's own bin directory: the system's tools
# first (coreutils, util-linux's flock, nix-env), whatever SSH gave after.
PATH=/run/current-system/sw/bin:/run/wrappers/bin:/nix/var/nix/profiles/default/bin${PATH:+:$PATH}
export PATH

profile=/nix/var/nix/profiles/system
state=/run/labprov            # per deploy, gone at reboot (the timer is too)
last=/var/lib/labprov/last-deploy

die() { echo "labprov agent: $*" >&2; exit 1; }

kind() {
  if [ -e /etc/NIXOS ]; then echo nixos
  elif [ "$(uname -s)" = Darwin ]; then echo darwin
  else echo unknown; fi
}

# revision GENERATION: the flake commit it was built from, if recorded.
revision() {
  if [ -x "$1/sw/bin/nixos-version" ]; then
    "$1/sw/bin/nixos-version" --configuration-revision 2> /dev/null || true
  elif [ -f "$1/darwin-version.json" ]; then
    sed -n 's/.*"configurationRevision": *"\([^"]*\)".*/\1/p' "$1/darwin-version.json"
  fi
}

# record RESULT GENERATION [REASON]: the last deploy, for `labprov status`.
record() {
  mkdir -p "${last%/*}"
  {
    echo "time=$(date +%s)"
    echo "result=$1"
    echo "generation=$2"
    echo "revision=$(revision "$2")"
    echo "reason=${3:-}"
  } > "$last.tmp"
  mv "$last.tmp" "$last"
}

# resolved LINK: where a link leads, or nothing when it leads nowhere.
resolved() { if [ -e "$1" ]; then readlink -f "$1"; fi; }

# pending: earlier deploys whose timer is still armed, neither confirmed nor
# put back (a deployer killed mid-deploy). Their timer would undo whatever
# a new deploy activates, so none starts until they are done.
pending() {
  [ -d "$state" ] || return 0
  for file in "$state"/agent-*.sh; do
    [ -e "$file" ] || continue
    id=${file##*/agent-}
    id=${id%.sh}
    if [ -e "$state/$id.confirmed" ] || [ -e "$state/$id.restored" ]; then continue; fi
    # Armed, or its confirm or restore holding the lock right now.
    if systemctl is-active --quiet "$(timer_unit "$id").timer" 2> /dev/null \
      || ! flock -n "$state/$id.lock" true 2> /dev/null; then
      echo "$id"
    fi
  done
}

# previous_generation: "N PATH" of the system profile's generation below
# the boot default (what a rollback goes to), or nothing.
previous_generation() {
  current_link=$(readlink "$profile" 2> /dev/null) || return 0
  n=${current_link#system-}
  n=${n%-link}
  best=
  for link in "$profile"-*-link; do
    [ -e "$link" ] || continue
    m=${link##*/system-}
    m=${m%-link}
    if [ "$m" -lt "$n" ] && { [ -z "$best" ] || [ "$m" -gt "$best" ]; }; then best=$m; fi
  done
  if [ -n "$best" ]; then echo "$best $(readlink -f "$profile-$best-link")"; fi
}

probe() {
  echo "kind=$(kind)"
  echo "previous=$(previous_generation)"
  for id in $(pending); do echo "pending=$id"; done
  echo "current=$(resolved /run/current-system)"
  echo "profile=$(resolved $profile)"
  echo "profile_link=$(readlink $profile 2> /dev/null || true)"
  echo "booted=$(resolved /run/booted-system)"
  echo "revision=$(revision /run/current-system)"
  if [ -f "$last" ]; then sed 's/^/last_/' "$last"; fi
}

# keep NEW: a garbage collector root for a closure labprov copied, until the
# host reboots, so a collection between the copy and the activation (the
# question may wait) cannot take it.
keep() {
  mkdir -p "$state/roots"
  nix-store --realise "$1" --add-root "$state/roots/${1##*/}" > /dev/null
  echo "kept=$1"
}

# The unit names of one deploy.
timer_unit() { echo "labprov-rollback-$1"; }
activate_unit() { echo "labprov-activate-$1"; }

# arm ID OLD SECONDS: the self-rollback; the timer runs this very file's
# `restore`, the one labprov would run.
arm() {
  id=$1 old=$2 seconds=$3
  [ -x "$old/bin/switch-to-configuration" ] || die "$old has no bin/switch-to-configuration: not a NixOS generation"
  [ "$0" = "$state/agent-$id.sh" ] || die "arm must run from $state/agent-$id.sh, not $0"
  [ "$(resolved /run/current-system)" = "$old" ] \
    || die "the host no longer runs $old (it changed since labprov asked): deploy again"
  for other in $(pending); do
    [ "$other" = "$id" ] || die "deploy $other is not confirmed yet and its timer will put this host back; deploy again once it has (labprov status shows it)"
  done
  # Where the boot default stood, for a restore after a confirm that moved
  # it and then failed.
  readlink "$profile" > "$state/$id.profile" 2> /dev/null || : > "$state/$id.profile"
  systemd-run --quiet --collect --no-ask-password --unit="$(timer_unit "$id")" \
    --on-active="$seconds" --timer-property=AccuracySec=1s --timer-property=RemainAfterElapse=no \
    --description="labprov: back to the previous generation unless deploy $id is confirmed" \
    /bin/sh "$0" restore-here "$id" "$old" "not confirmed within ${seconds}s"
  echo "armed=$(timer_unit "$id").timer"
}

# in_unit ID NAME COMMAND...: COMMAND as the transient unit labprov-NAME-ID,
# waited for. A unit outlives this SSH session: a switch that restarts sshd
# or the network, or a deployer that disappears, does not stop it halfway
# (nixos-rebuild runs its switch the same way). Its stdout comes back on
# stdout, its stderr on stderr, once it ended; its exit status is returned.
# With $max set, the unit is stopped after that many seconds.
in_unit() {
  id=$1 name=$2
  shift 2
  mkdir -p "$state"
  out=$state/$name-$id.out log=$state/$name-$id.log
  : > "$out"
  : > "$log"
  status=0
  systemd-run --quiet --collect --no-ask-password --wait --service-type=exec \
    --unit="labprov-$name-$id" --working-directory=/ \
    --setenv=NIXOS_INSTALL_BOOTLOADER=0 --setenv=PATH="$PATH" \
    --property="StandardOutput=append:$out" --property="StandardError=append:$log" \
    ${max:+"--property=RuntimeMaxSec=$max"} "$@" || status=$?
  cat "$log" >&2
  cat "$out"
  return "$status"
}

# activate ID NEW SECONDS: switch-to-configuration test, bounded by the
# confirm timeout (past it the timer restores anyway); exit status as the
# switch's (4: a unit failed, 100: the new generation needs a reboot).
activate() {
  id=$1 new=$2 max=$3
  [ -x "$new/bin/switch-to-configuration" ] || die "$new has no bin/switch-to-configuration: not a NixOS generation"
  started=$(date +%s)
  status=0
  in_unit "$id" activate "$new/bin/switch-to-configuration" test || status=$?
  if [ "$status" != 0 ] && [ $(($(date +%s) - started)) -ge "$max" ]; then
    echo "the activation ran longer than the confirm timeout (${max}s) and was stopped" >&2
  fi
  return "$status"
}

# units UNIT...: each unit's state, `unit=state` per line.
units() {
  for unit in "$@"; do
    echo "$unit=$(systemctl is-active "$unit" 2> /dev/null || true)"
  done
}

# confirm ID NEW: the checks passed: NEW becomes the system profile and the
# boot default, and only then the deploy counts as confirmed and its timer
# stops. Under the deploy's lock: a timer firing meanwhile waits, then finds
# it confirmed; one that fired first makes this fail. If a step fails, the
# timer stays armed and labprov restores at once.
confirm_here() {
  id=$1 new=$2
  exec 9> "$state/$id.lock"
  flock 9
  [ ! -e "$state/$id.restored" ] || die "the host already went back by itself: $(cat "$state/$id.restored")"
  # 9>&-: nothing the switch starts may keep the deploy's lock.
  nix-env -p "$profile" --set "$new" 9>&-
  "$new/bin/switch-to-configuration" boot 9>&-
  touch "$state/$id.confirmed"
  systemctl stop "$(timer_unit "$id").timer" 2> /dev/null || true
  record confirmed "$new" || true
  echo "confirmed=$new"
}

# restore ID OLD REASON: back to OLD, once (the timer and labprov may both
# ask). Waits for a still running activation first: switch-to-configuration
# refuses to run twice at once. A boot default a failed confirm moved is
# put back first.
restore_here() {
  id=$1 old=$2 reason=$3
  mkdir -p "$state"
  exec 9> "$state/$id.lock"
  flock 9
  if [ -e "$state/$id.confirmed" ]; then
    echo "restored=none: deploy $id was confirmed"
    return 0
  fi
  if [ -e "$state/$id.restored" ]; then
    echo "restored=$old"
    echo "status=0"
    return 0
  fi
  # A switch still running holds the switch lock, and OLD's would be
  # refused: give it a minute, then stop it.
  waited=0
  while systemctl is-active --quiet "$(activate_unit "$id")" 2> /dev/null; do
    if [ "$waited" -ge 60 ]; then
      echo "the activation still runs after ${waited}s: stopping it" >&2
      systemctl stop "$(activate_unit "$id")" 2> /dev/null || true
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  status=0
  before=$(cat "$state/$id.profile" 2> /dev/null || true)
  moved=$(readlink "$profile" 2> /dev/null || true)
  if [ -n "$before" ] && [ "$moved" != "$before" ]; then
    # The failed confirm's generation goes too: a later rollback must not
    # land on a generation that never passed a deploy.
    generation=${before#system-}
    generation=${generation%-link}
    nix-env -p "$profile" --switch-generation "$generation" >&2 9>&- || status=$?
    "$(readlink -f "$profile")/bin/switch-to-configuration" boot >&2 9>&- || status=$?
    failed_generation=${moved#system-}
    failed_generation=${failed_generation%-link}
    [ "$status" != 0 ] || nix-env -p "$profile" --delete-generations "$failed_generation" >&2 9>&- || status=$?
  fi
  "$old/bin/switch-to-configuration" test >&2 9>&- || status=$?
  # Back on OLD (4: one of OLD's own units failed): done, the timer is no
  # longer needed. Anything else: the timer stays armed and tries again.
  if [ "$status" = 0 ] || [ "$status" = 4 ]; then
    echo "$reason" > "$state/$id.restored"
    systemctl stop "$(timer_unit "$id").timer" 2> /dev/null || true
    record "rolled back" "$old" "$reason" || true
  fi
  echo "restored=$old"
  echo "status=$status"
}

# previous: the manual rollback (`labprov rollback`): the system profile one
# generation back, activated and made the boot default.
previous_here() {
  nix-env -p "$profile" --rollback >&2
  new=$(readlink -f "$profile")
  "$new/bin/switch-to-configuration" switch >&2
  record "rolled back by hand" "$new" "labprov rollback" || true
  echo "current=$new"
}

# nix-darwin has no `test`: the profile is set and the new generation
# activated, as darwin-rebuild switch does after its build; a failed check
# goes back with darwin-rebuild --rollback.
darwin_activate() {
  new=$2
  nix-env -p "$profile" --set "$new" >&2
  "$new/activate" >&2
}
darwin_confirm() { record confirmed "$2"; echo "confirmed=$2"; }
darwin_restore() {
  old=$2
  if [ "$(resolved $profile)" != "$old" ]; then
    /run/current-system/sw/bin/darwin-rebuild --rollback >&2
  else
    "$old/activate" >&2
  fi
  record "rolled back" "$(readlink -f $profile)" "$3"
  echo "restored=$(readlink -f $profile)"
  echo "status=0"
}

action=${1:-}
[ $# -gt 0 ] && shift
case "$(kind):$action" in
  *:probe) probe ;;
  nixos:arm) arm "$@" ;;
  nixos:activate) activate "$@" ;;
  # labprov's calls run the work in a unit of their own; the timer's unit
  # and those units run the *-here actions.
  nixos:confirm) in_unit "$1" confirm /bin/sh "$0" confirm-here "$@" ;;
  nixos:restore) in_unit "$1" restore /bin/sh "$0" restore-here "$@" ;;
  nixos:previous) in_unit "$1" previous /bin/sh "$0" previous-here ;;
  nixos:confirm-here) confirm_here "$@" ;;
  nixos:restore-here) restore_here "$@" ;;
  nixos:previous-here) previous_here ;;
  nixos:dry-activate) "$1/bin/switch-to-configuration" dry-activate ;;
  nixos:keep) keep "$@" ;;
  nixos:diff) nix --extra-experimental-features nix-command store diff-closures "$1" "$2" ;;
  *:units) units "$@" ;;
  darwin:arm) echo "armed=none" ;;
  darwin:activate) darwin_activate "$@" ;;
  darwin:confirm) darwin_confirm "$@" ;;
  darwin:restore) darwin_restore "$@" ;;
  darwin:previous) /run/current-system/sw/bin/darwin-rebuild --rollback >&2 ;;
  darwin:keep) keep "$@" ;;
  darwin:diff) nix --extra-experimental-features nix-command store diff-closures "$1" "$2" ;;
  darwin:dry-activate) echo "nix-darwin cannot show what would restart" ;;
  *) die "cannot run \`$action\` on this host (kind $(kind))" ;;
esac
