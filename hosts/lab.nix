# Facts about the lab as a whole (pure data, read by hosts/facts.nix): the
# defaults every host takes unless its own facts.nix says otherwise.
{
  # The lab's time zone (tz database name, for example "Europe/Berlin"): every
  # NixOS host's clock and logs. A host in another place sets `timeZone` in
  # its own facts.nix.
  timeZone = "UTC";
}
