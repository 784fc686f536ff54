# nixos-bootstrap: the minimal base a new aarch64 machine is installed with
# before it gets a host directory of its own.
{ lib, ... }:
{
  imports = [
    ./hardware.nix
  ];

  disko.devices = import ./disko.nix;

  # Nothing beyond SSH, the admin and the node exporter from _modules/nixos:
  # no Home Manager environment either.
  documentation.enable = lib.mkDefault false;
  homelab.homeProfile = "none";

  homelab.homeStateVersion = "26.05";
  system.stateVersion = "26.05";
}
