# Prometheus node exporter on every NixOS host; luna's Prometheus scrapes them all.
{ lib, ... }:
{
  services.prometheus.exporters.node = {
    enable = lib.mkDefault true;
    enabledCollectors = [ "systemd" ];
    openFirewall = lib.mkDefault true;
  };
}
