# Unattended upgrades from the flake (opt-in): hosts nobody deploys to by hand.
{ config, lib, ... }:
let
  cfg = config.homelab.autoUpgrade;
in
{
  options.homelab.autoUpgrade = {
    enable = lib.mkEnableOption "nightly upgrades from the lab's flake";
    flake = lib.mkOption {
      type = lib.types.str;
      example = "github:OWNER/homelab";
      description = "Flake reference to upgrade from; the host's configuration is picked by hostname.";
    };
    allowReboot = lib.mkEnableOption "a reboot when the kernel or initrd changed";
  };

  config = lib.mkIf cfg.enable {
    system.autoUpgrade = {
      enable = true;
      inherit (cfg) flake allowReboot;
      dates = "04:00";
      randomizedDelaySec = "45min";
      # The flake.lock in the repository is the pin; never update it on a host.
      flags = [ "--no-write-lock-file" ];
    };
  };
}
