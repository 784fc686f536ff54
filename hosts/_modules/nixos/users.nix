# The admin's account on NixOS: a normal user who may use sudo and Podman.
{ config, lib, ... }:
let
  cfg = config.homelab;
in
{
  config = lib.mkIf (cfg.admins ? ${cfg.user}) {
    users.users.${cfg.user} = {
      isNormalUser = true;
      extraGroups = [ "wheel" ] ++ lib.optional config.homelab.containers.enable "podman";
    };
    # Keys only: the admin has no password, so sudo must not ask for one.
    security.sudo.wheelNeedsPassword = false;
  };
}
