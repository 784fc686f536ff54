# Raspberry Pi 4 (nixpi and the nixpi bootstrap image): nixos-hardware's board
# module, with nixpkgs' own kernel instead of the vendor kernel that module
# builds from source at the pinned revision (raspberry-pi/common/kernel.nix,
# no binary cache carries it: every kernel bump would compile for hours on
# the Pi or under emulation). The mainline kernel boots the Pi 4 with its own
# bcm2711 device trees and is built by Hydra; what it lacks are vendor-only
# device-tree overlays (some HATs), which nixpi does not use.
# docs/nix.md says how to switch back.
{ inputs, lib, pkgs, ... }:
{
  imports = [
    inputs.nixos-hardware.nixosModules.raspberry-pi-4
  ];

  # Above the board module's mkDefault, below a host's plain setting.
  boot.kernelPackages = lib.mkOverride 900 pkgs.linuxPackages;
}
