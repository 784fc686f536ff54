# Boot from the SD card labimg builds (not nixpkgs' sd-image module): MBR, a FAT
# firmware partition and an ext4 root with /boot/extlinux/extlinux.conf, the
# root sized to its content. On the first boot this grows the root to the whole
# card and registers the store paths labimg copied, as sd-image.nix does.
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

    # First boot only (the registration file is removed at the end). Mirrors
    # nixpkgs nixos/modules/installer/sd-card/sd-image.nix: grow partition 2 to
    # the end of the card, resize ext4 online, load the store registration.
    boot.postBootCommands = ''
      if [ -f ${registration} ]; then
        set -euo pipefail
        set -x
        rootPart=$(${pkgs.util-linux}/bin/findmnt -n -o SOURCE /)
        bootDevice=$(${pkgs.util-linux}/bin/lsblk -npo PKNAME "$rootPart")
        partNum=$(${pkgs.util-linux}/bin/lsblk -npo MAJ:MIN "$rootPart" | ${pkgs.gawk}/bin/awk -F: '{print $2}')
        echo ",+," | ${pkgs.util-linux}/bin/sfdisk -N"$partNum" --no-reread "$bootDevice"
        ${pkgs.parted}/bin/partprobe
        ${pkgs.e2fsprogs}/bin/resize2fs "$rootPart"

        ${config.nix.package.out}/bin/nix-store --load-db < ${registration}
        # nixos-rebuild needs a system profile and /etc/NIXOS.
        touch /etc/NIXOS
        ${config.nix.package.out}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
        rm -f ${registration}
      fi
    '';
  };
}
