# The lab's DNS: blocky answers for <host>.lab from the host facts, blocks ads
# and forwards the rest over DNS-over-HTTPS.
{ config, lib, ... }:
let
  domain = "lab";
  withAddress = lib.filterAttrs (_: host: host ? address) config.homelab.hosts;
  # The web interfaces luna's reverse proxy serves (services/proxy.nix).
  proxied = [ "unifi" ];
in
{
  services.blocky = {
    enable = true;
    settings = {
      # Loopback and the LAN address only, never every address: Podman's
      # default network runs aardvark-dns on port 53 of its bridge
      # (homelab.containers keeps dns_enabled), which a wildcard bind takes.
      # blocky's form: comma-separated [IP]:port (its configuration.md).
      ports.dns = "127.0.0.1:53,${config.homelab.facts.address}:53";
      ports.http = 4000; # metrics for Prometheus
      prometheus.enable = true;
      upstreams.groups.default = [
        "https://one.one.one.one/dns-query"
        "https://dns.quad9.net/dns-query"
      ];
      # Resolves the DoH upstreams' own names before blocky is up.
      bootstrapDns = [ "tcp+udp:1.1.1.1" "tcp+udp:9.9.9.9" ];
      customDNS.mapping =
        lib.mapAttrs' (name: host: lib.nameValuePair "${name}.${domain}" host.address) withAddress
        // lib.genAttrs (map (name: "${name}.${domain}") proxied) (_: config.homelab.facts.address);
      blocking = {
        denylists.ads = [ "https://raw.githubusercontent.com/StevenBlack/hosts/master/hosts" ];
        clientGroupsBlock.default = [ "ads" ];
      };
    };
  };

  # Lets blocky bind the LAN address before DHCP or the link has brought it up.
  boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind" = 1;

  # blocky has no openFirewall option.
  networking.firewall = {
    allowedTCPPorts = [ 53 ];
    allowedUDPPorts = [ 53 ];
  };
}
