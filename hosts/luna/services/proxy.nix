# Reverse proxy for luna's web interfaces, with certificates from Caddy's own
# local CA (nothing here is reachable from the internet). Only interfaces with
# a login of their own: Prometheus and Glances have none and stay on loopback
# (services/monitoring.nix).
{
  services.caddy = {
    enable = true;
    virtualHosts = {
      "unifi.lab".extraConfig = ''
        tls internal
        reverse_proxy https://127.0.0.1:8443 {
          transport http {
            tls_insecure_skip_verify
          }
        }
      '';
    };
  };

  networking.firewall.allowedTCPPorts = [ 80 443 ];
}
