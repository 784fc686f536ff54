# <name>: one line on what this machine is for.
{
  imports = [
    ./hardware.nix
  ];

  disko.devices = import ./disko.nix;

  # Feature flags from hosts/_modules (homelab.*), for example:
  # homelab.containers.enable = true;
  # homelab.homeProfile = "dev"; # the full development environment (default "admin")

  homelab.homeStateVersion = "26.05";
  # The release this host was installed with; never change it afterwards.
  system.stateVersion = "26.05";
}
