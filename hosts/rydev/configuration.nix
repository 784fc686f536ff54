# rydev: the development and testing VM (Parallels on Apple silicon).
{
  imports = [
    ./hardware.nix
  ];

  disko.devices = import ./disko.nix;

  homelab.containers.enable = true;
  homelab.fonts.enable = true;
  homelab.homeProfile = "dev";

  homelab.homeStateVersion = "26.05";
  system.stateVersion = "26.05";
}
