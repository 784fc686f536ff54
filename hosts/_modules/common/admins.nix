# The lab's administrators (hosts/admins.nix) and which of them owns a host.
# Installers import this file alone: it needs nothing but the module system.
{ config, lib, ... }:
let
  cfg = config.homelab;
  adminNames = lib.attrNames cfg.admins;
in
{
  options.homelab = {
    admins = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule {
        options = {
          description = lib.mkOption {
            type = lib.types.str;
            description = "Full name, used for the login account and git.";
          };
          email = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "ry@example.org";
            description = "Address for git commits; null leaves git to guess (or refuse) one.";
          };
          sshKeys = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
            description = "SSH public keys that open this admin's account, root and the installers.";
          };
          ageRecipients = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
            description = "age recipients every secret is encrypted to (read by labprov, not by the system).";
          };
          pgpFingerprints = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
            description = "OpenPGP fingerprints every sops file is also encrypted to; the public keys are hosts/admins/<FINGERPRINT>.asc (read by labprov, not by the system).";
          };
        };
      });
      default = { };
      description = "Lab administrators, from hosts/admins.nix (set by lib/mkSystem.nix).";
    };

    user = lib.mkOption {
      type = lib.types.str;
      default = if lib.length adminNames == 1 then lib.head adminNames else "";
      defaultText = lib.literalMD "the only admin in `homelab.admins`";
      example = "ry";
      description = "The admin whose login account and Home Manager environment this host carries.";
    };

    adminSshKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      readOnly = true;
      default = lib.concatMap (admin: admin.sshKeys) (lib.attrValues cfg.admins);
      defaultText = lib.literalMD "every admin's `sshKeys`";
      description = "All admins' SSH public keys, for root and installer logins.";
    };
  };

  config.assertions = [
    {
      assertion = cfg.admins == { } || lib.elem cfg.user adminNames;
      message = "homelab.user must name one of the admins in hosts/admins.nix (${lib.concatStringsSep ", " adminNames}); set it in this host's configuration.nix.";
    }
  ];
}
