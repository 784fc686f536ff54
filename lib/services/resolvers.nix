# The filtering resolvers' settings: Blocky and AdGuard Home block ads and
# forward the lab's zones to BIND; the rest goes to public DNS-over-HTTPS.
# NixOS takes these as attribute sets (services.blocky.settings,
# services.adguardhome.settings) and writes the YAML itself.
{ domain, hosts, services, endpoint, daemonOn, authHost, reverseZone, ... }:
let
  bindAt = host: endpoint (daemonOn "bind" authHost) "dns" host authHost;
  listen = host: p: [ "127.0.0.1" ] ++ (if p.bind == "lan" then [ hosts.${host}.address ] else [ ]);

  upstreams = [ "https://one.one.one.one/dns-query" "https://dns.quad9.net/dns-query" ];
  # Resolve the DoH upstreams' own names before anything else works.
  bootstrap = [ "1.1.1.1" "9.9.9.9" ];
  denylist = "https://raw.githubusercontent.com/StevenBlack/hosts/master/hosts";
in
{
  blocky = host:
    let
      self = services.${daemonOn "blocky" host};
      p = self.ports.dns;
    in
    {
      # [IP]:port, comma-separated: never a wildcard, which would take port 53
      # on Podman's bridge from aardvark-dns.
      ports.dns = builtins.concatStringsSep "," (map (a: "${a}:${toString p.port}") (listen host p));
      ports.http = "${if self.ports.metrics.bind == "lan" then hosts.${host}.address else "127.0.0.1"}:${toString self.ports.metrics.port}";
      prometheus.enable = true;
      upstreams.groups.default = upstreams;
      bootstrapDns = map (a: "tcp+udp:${a}") bootstrap;
      conditional.mapping = {
        ${domain} = bindAt host;
        ${reverseZone} = bindAt host;
      };
      blocking = {
        denylists.ads = [ denylist ];
        clientGroupsBlock.default = [ "ads" ];
      };
      caching.prefetching = true;
    };

  adguardhome = host:
    let
      self = services.${daemonOn "adguardhome" host};
      p = self.ports.dns;
    in
    {
      http.address = "127.0.0.1:${toString self.ports.web.port}";
      dns = {
        bind_hosts = listen host p;
        port = p.port;
        # [/domain/]upstream sends a zone to its own server.
        upstream_dns = upstreams ++ [ "[/${domain}/${reverseZone}/]${bindAt host}" ];
        bootstrap_dns = bootstrap;
        # PTR questions for the lab's own subnet go here, not upstream.
        use_private_ptr_resolvers = true;
        local_ptr_upstreams = [ (bindAt host) ];
      };
      filters = [{ enabled = true; url = denylist; name = "StevenBlack hosts"; id = 1; }];
    };
}
