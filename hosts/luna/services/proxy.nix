# Reverse proxy for luna's web interfaces, with certificates from Caddy's own
# local CA (nothing here is reachable from the internet).
{
  services.caddy = {
    enable = true;
    virtualHosts = {
      "prometheus.lab".extraConfig = ''
        tls internal
        reverse_proxy 127.0.0.1:9090
      '';
      "glances.lab".extraConfig = ''
        tls internal
        reverse_proxy 127.0.0.1:61208
      '';
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
