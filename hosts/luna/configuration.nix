# luna: the home lab server (x86_64). DNS, reverse proxies, containers, the
# network controllers and monitoring for the whole lab: what runs here comes
# from the service registry (hosts/services.nix, docs/services.md).
{
  imports = [
    ./hardware.nix
  ];

  disko.devices = import ./disko.nix;

  homelab.homeStateVersion = "26.05";
  system.stateVersion = "26.05";
}
