# The proxies (docs/services.md): Caddy for the lab's HTTPS names, HAProxy
# for TCP/TLS balancing, Nginx for the status page, with lib/services' texts.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab.services;
  ready = config.homelab.servicesReady;
  secretOf = daemon: lib.findFirst (s: s.daemon == daemon) null cfg.secrets;
in
{
  config = lib.mkMerge [
    (lib.mkIf (ready "caddy") (
      let secret = secretOf "caddy"; in {
        services.caddy = {
          enable = true;
          configFile = pkgs.writeText "Caddyfile" cfg.files.Caddyfile;
          adapter = "caddyfile";
          # The admin password's hash reaches the Caddyfile's {$VAR} through
          # the environment, from a file sops-nix renders at activation.
          environmentFile = lib.mkIf (secret != null) config.sops.templates."caddy.env".path;
        };
        sops.templates = lib.optionalAttrs (secret != null) {
          "caddy.env" = {
            content = "${secret.env}=${config.sops.placeholder.${secret.key}}\n";
            restartUnits = [ secret.unit ];
          };
        };
      }
    ))

    (lib.mkIf (ready "haproxy") {
      services.haproxy = {
        enable = true;
        # The module puts its own `global` section (the stats socket) before it.
        config = cfg.files."haproxy.cfg";
      };
    })

    (lib.mkIf (ready "nginx") {
      services.nginx = {
        enable = true;
        # No default localhost server: it would listen on port 80, Caddy's.
        virtualHosts = { };
        appendHttpConfig = cfg.files."nginx-status.conf";
      };
      environment.etc = lib.mapAttrs (_: text: { inherit text; }) (lib.filterAttrs (path: _: lib.hasPrefix "lab-status/" path) cfg.etc);
    })
  ];
}
