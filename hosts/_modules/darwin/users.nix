# The admin's account on macOS exists already; nix-darwin only needs to know
# its home for Home Manager.
{ config, lib, ... }:
let
  cfg = config.homelab;
in
{
  config = lib.mkIf (cfg.admins ? ${cfg.user}) {
    users.users.${cfg.user}.home = "/Users/${cfg.user}";
  };
}
