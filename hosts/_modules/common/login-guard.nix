# Refuses to evaluate a system nobody could log into: every NixOS host, the
# installers and the nixpi bootstrap image have password logins off, so
# without an admin SSH key in hosts/admins.nix they would be unreachable.
# The Mac is not guarded: its owner logs in at the machine.
{ config, ... }:
let
  problem = import ../../../lib/login-guard.nix config.homelab.admins;
in
{
  config.assertions = [
    {
      assertion = problem == null;
      message = if problem == null then "" else problem;
    }
  ];
}
