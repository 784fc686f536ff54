# The admin's login account, the same name and keys on every host.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab;
  admin = cfg.admins.${cfg.user};
in
{
  config = lib.mkIf (cfg.admins ? ${cfg.user}) {
    users.users.${cfg.user} = {
      inherit (admin) description;
      shell = pkgs.zsh;
      openssh.authorizedKeys.keys = admin.sshKeys;
    };
  };
}
