# Boot from the SD card labimg builds (not nixpkgs' sd-image module): MBR, a FAT
# firmware partition and an ext4 root with /boot/extlinux/extlinux.conf, the
# root sized to its content. On the first boot this grows the root to the whole
# card and registers the store paths labimg copied, as sd-image.nix does (two
# early systemd units; boot.postBootCommands does not run under systemd stage 1).
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab.sdCard;
  # labimg's defaults when the host facts leave a field out (hosts/nixpi/facts.nix).
  firmwareLabel = cfg.image.firmwareLabel or "FIRMWARE";
  rootLabel = cfg.image.rootLabel or "NIXOS_SD";
  registration = "/nix-path-registration";
in
{
  options.homelab.sdCard = {
    enable = lib.mkEnableOption "booting from an SD card laid out by labimg";
    image = lib.mkOption {
      type = lib.types.attrsOf lib.types.anything;
      default = { };
      example = lib.literalExpression "config.homelab.facts.image";
      description = "The SD image layout from the host facts (`image`); labels missing here take labimg's defaults.";
    };
  };

  config = lib.mkIf cfg.enable {
    boot.loader.grub.enable = false;
    boot.loader.generic-extlinux-compatible.enable = true;

    fileSystems = {
      "/" = {
        device = "/dev/disk/by-label/${rootLabel}";
        fsType = "ext4";
      };
      # Firmware and U-Boot only; the system never needs it mounted.
      "/boot/firmware" = {
        device = "/dev/disk/by-label/${firmwareLabel}";
        fsType = "vfat";
        options = [ "nofail" "noauto" ];
      };
    };

    # First boot only: both units run while labimg's registration file is
    # there, the second removes it. Ordered as nixpkgs' sd-image.nix orders
    # its own since 2026 (systemd units early in sysinit, before the Nix
    # daemon; boot.postBootCommands is not run by a systemd stage 1 system):
    # grow partition 2 to the end of the card and resize ext4 online, then
    # load the store registration and make the system profile.
    systemd.services.homelab-expand-root = {
      description = "Grow the root partition and filesystem to the whole SD card";
      unitConfig = {
        DefaultDependencies = false;
        ConditionPathExists = registration;
      };
      wantedBy = [ "sysinit.target" ];
      after = [ "local-fs.target" ];
      before = [ "sysinit.target" "shutdown.target" "homelab-register-nix-paths.service" ];
      conflicts = [ "shutdown.target" ];
      restartIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      path = [ pkgs.util-linux pkgs.gawk pkgs.parted pkgs.e2fsprogs ];
      script = ''
        rootPart=$(findmnt -n -o SOURCE /)
        bootDevice=$(lsblk -npo PKNAME "$rootPart")
        partNum=$(lsblk -npo MAJ:MIN "$rootPart" | awk -F: '{print $2}')
        echo ",+," | sfdisk -N"$partNum" --no-reread "$bootDevice"
        partprobe
        resize2fs "$rootPart"
      '';
    };

    # Our own name: this module replaces sd-image.nix (labimg builds the
    # image), so nothing upstream defines it, and it cannot clash if that ever
    # changes.
    systemd.services.homelab-register-nix-paths = {
      description = "Register the store paths labimg copied onto the card";
      unitConfig = {
        DefaultDependencies = false;
        ConditionPathExists = registration;
      };
      wantedBy = [ "sysinit.target" ];
      # Only after the grow succeeded: this unit removes the marker both
      # depend on, so a failed grow must leave it for the next boot to retry.
      requires = [ "homelab-expand-root.service" ];
      after = [ "local-fs.target" "homelab-expand-root.service" ];
      before = [ "sysinit.target" "shutdown.target" "nix-daemon.socket" "nix-daemon.service" ];
      conflicts = [ "shutdown.target" ];
      restartIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        ${config.nix.package.out}/bin/nix-store --load-db < ${registration}
        # nixos-rebuild needs a system profile and /etc/NIXOS.
        touch /etc/NIXOS
        ${config.nix.package.out}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
        rm -f ${registration}
      '';
    };
  };
}
