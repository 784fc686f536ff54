# Monitoring: Prometheus scrapes every NixOS host's node exporter (targets from
# the host facts) and blocky; Glances gives a quick live view of luna itself.
{ config, lib, ... }:
let
  nodeTargets = lib.mapAttrsToList (_: host: "${host.address}:9100")
    (lib.filterAttrs (_: host: host.class == "nixos" && host ? address) config.homelab.hosts);
in
{
  services.prometheus = {
    enable = true;
    port = 9090;
    retentionTime = "90d";
    scrapeConfigs = [
      {
        job_name = "node";
        static_configs = [{ targets = nodeTargets; }];
      }
      {
        job_name = "blocky";
        static_configs = [{ targets = [ "127.0.0.1:4000" ]; }];
      }
    ];
  };

  services.glances = {
    enable = true;
    openFirewall = false; # behind the proxy
  };
}
