# luna: the home lab server (x86_64). DNS, reverse proxy, containers, the
# network controller and monitoring for the whole lab.
{
  imports = [
    ./hardware.nix
    ./services/dns.nix
    ./services/monitoring.nix
    ./services/proxy.nix
    ./services/unifi.nix
  ];

  disko.devices = import ./disko.nix;

  homelab.containers.enable = true;

  homelab.homeStateVersion = "26.05";
  system.stateVersion = "26.05";
}
