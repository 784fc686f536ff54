# Monitoring (docs/services.md): Prometheus scrapes every service with
# metrics in the registry and alerts on a service down or a disk almost
# full; node exporter on every NixOS host; Glances for a live look at luna.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab.services;
  ready = config.homelab.servicesReady;
  daemonService = daemon: lib.findFirst (s: s.daemon == daemon) null (lib.attrValues cfg.services);
  # A loopback port listens on 127.0.0.1; a LAN one everywhere (the firewall
  # opens it from the registry).
  address = p: if p.bind == "lan" then "0.0.0.0" else "127.0.0.1";
in
{
  config = lib.mkMerge [
    (lib.mkIf (ready "prometheus") (
      let p = (daemonService "prometheus").ports.web; in {
        services.prometheus = {
          enable = true;
          listenAddress = address p;
          port = p.port;
          retentionTime = "90d";
          globalConfig = cfg.settings.prometheus.config.global;
          scrapeConfigs = cfg.settings.prometheus.scrapeConfigs;
          ruleFiles = [ (pkgs.writeText "prometheus-rules.yml" cfg.files."prometheus-rules.yml") ];
        };
      }
    ))

    (lib.mkIf (ready "node-exporter") (
      let p = (daemonService "node-exporter").ports.metrics; in {
        services.prometheus.exporters.node = {
          enable = true;
          listenAddress = address p;
          port = p.port;
          enabledCollectors = [ "systemd" ];
        };
      }
    ))

    (lib.mkIf (ready "glances") (
      let p = (daemonService "glances").ports.web; in {
        services.glances = {
          enable = true;
          port = p.port;
          # Repeats the module's default --webserver, which extraArgs replaces.
          extraArgs = [ "--webserver" "--bind" (address p) ];
        };
      }
    ))
  ];
}
