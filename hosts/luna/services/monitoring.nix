# Monitoring: Prometheus scrapes every NixOS host's node exporter (targets from
# the host facts) and blocky; Glances gives a quick live view of luna itself.
# Neither has authentication of its own, so both listen on loopback only and
# are not proxied: reach them with `ssh -L 9090:127.0.0.1:9090 luna` (61208
# for Glances).
{ config, lib, ... }:
let
  nodeTargets = lib.mapAttrsToList (_: host: "${host.address}:9100")
    (lib.filterAttrs (_: host: host.class == "nixos" && host ? address) config.homelab.hosts);
in
{
  services.prometheus = {
    enable = true;
    listenAddress = "127.0.0.1";
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
    openFirewall = false;
    extraArgs = [ "--webserver" "--bind" "127.0.0.1" ];
  };
}
