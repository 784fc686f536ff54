# Default-deny firewall; services open their own ports.
{ lib, ... }:
{
  networking.firewall = {
    enable = lib.mkDefault true;
    # Port scans on the LAN are not worth a log line each.
    logRefusedConnections = lib.mkDefault false;
  };
}
