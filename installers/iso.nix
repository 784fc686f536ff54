# Installer ISO (x86_64 and aarch64): the NixOS minimal installer with SSH on
# and the admins' public keys, so `labprov install HOST` can reach it. It
# carries nothing secret: host keys are injected by labprov at install time.
{ config, lib, modulesPath, pkgs, ... }:
{
  imports = [
    "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix"
  ];

  networking.hostName = "nixos-installer";

  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };
  users.users.root.openssh.authorizedKeys.keys = config.homelab.adminSshKeys;
  users.users.nixos.openssh.authorizedKeys.keys = config.homelab.adminSshKeys;

  # `labprov install` drives the installer's own labprov (it applies the
  # host's disko spec here); its wrapper brings blkid, mount and every mkfs.
  environment.systemPackages = with pkgs; [
    labprov
    btrfs-progs
    dosfstools
    e2fsprogs
    gptfdisk
    parted
    rsync
    xfsprogs
  ];

  nix.settings.experimental-features = [ "nix-command" "flakes" ];

  # The installer's own release, not a host's.
  system.stateVersion = lib.trivial.release;
}
