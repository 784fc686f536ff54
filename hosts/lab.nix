# Facts about the lab as a whole (pure data, read by hosts/facts.nix): the
# defaults every host takes unless its own facts.nix says otherwise.
{
  # The lab's time zone (tz database name, for example "Europe/Berlin"): every
  # NixOS host's clock and logs. A host in another place sets `timeZone` in
  # its own facts.nix.
  timeZone = "UTC";

  # The lab's network. Every host address lies in `subnet` (checked by
  # lib/services); `domain` is the zone BIND serves for the hosts and the
  # services of hosts/services.nix. The reverse zone follows the subnet, so
  # its prefix length is a whole number of octets (8, 16 or 24).
  network = {
    domain = "lab";
    subnet = "192.168.1.0/24";
  };

  # Backups of the services' state (docs/operations.md, "Backups"): every
  # host's repositories get a backup on `schedule` (systemd OnCalendar;
  # a repository in the host's facts may name its own),
  # pruned to `retention` (restic forget --keep-*); `periodSeconds` is the
  # schedule's period, for the stale-backup alert. The restore test runs on
  # `restoreTestSchedule` (away from the backups: restic's check waits for
  # no lock) and reads `checkSubset` of the packs back.
  backup = {
    schedule = "daily";
    periodSeconds = 86400;
    restoreTestSchedule = "Sun *-*-* 12:00:00";
    checkSubset = "5%";
    retention = { daily = 7; weekly = 5; monthly = 12; };
  };
}
