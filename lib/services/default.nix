# The lab's services, derived from the registry (hosts/services.nix) and the
# host facts (hosts/facts.nix) with builtins only: checked, then rendered.
#
#   (import ./lib/services { }).hosts.luna.files."named.conf"
#
# `hosts.<host>` holds, for every host that runs something:
#   services  the registry's services on it, normalized (ports filled in)
#   files     every configuration text, by file name: what
#             scripts/render-services writes to OUT/<host>/ and what the NixOS
#             modules (hosts/_modules/nixos/services) give the daemons
#   etc       the files among them that live under /etc on the host
#   settings  the structured settings the NixOS modules take as attribute sets
#             (Blocky, AdGuard Home, Prometheus, UniFi's ports, the
#             containers), rendered to
#             files too
#   secrets   the sops-nix secrets its daemons read (key, what it holds)
#   firewall  the ports to open, health  the checks a deploy runs
# A registry mistake is an evaluation error that names the entry; nothing is
# rendered from a registry with a mistake.
{ facts ? import ../../hosts/facts.nix
, registry ? import ../../hosts/services.nix
}:
let
  u = import ./util.nix;
  net = import ./net.nix;

  inherit (facts.lab.network) domain;
  subnetText = facts.lab.network.subnet;
  subnet = net.parseCidr subnetText;
  hosts = facts.hosts;
  nixosHosts = builtins.filter (h: hosts.${h}.class == "nixos" && hosts.${h} ? address) (builtins.attrNames hosts);

  # The daemons lib/services can render and hosts/_modules/nixos/services runs.
  daemons = [ "bind" "blocky" "adguardhome" "dnsdist" "caddy" "haproxy" "nginx" "prometheus" "node-exporter" "glances" "unifi" "omada" "container" ];

  normalizePort = purpose: p: {
    inherit purpose;
    port = p.port or null;
    last = p.last or (p.port or null);
    protocol = p.protocol or "tcp";
    bind = p.bind or "loopback";
    open = p.open or false;
    protocols = { tcp = [ "tcp" ]; udp = [ "udp" ]; dns = [ "udp" "tcp" ]; }.${p.protocol or "tcp"} or [ ];
  };

  services = builtins.mapAttrs
    (name: s: {
      inherit name;
      host = s.host or null;
      hosts = if (s.host or null) == "*" then nixosHosts else [ (s.host or null) ];
      daemon = s.daemon or (if s ? container then "container" else name);
      unit = s.unit or null;
      ports = builtins.mapAttrs normalizePort (s.ports or { });
      metrics = s.metrics or null;
      health = s.health or null;
      names = s.names or [ ];
      container = s.container or null;
      backup =
        if s ? backup then {
          paths = s.backup.paths or [ ];
          exclude = s.backup.exclude or [ ];
          stop = s.backup.stop or false;
          checks = s.backup.checks or { };
        } else null;
    })
    registry.services;

  routes = builtins.mapAttrs
    (name: r: {
      inherit name;
      via = r.via or null;
      to = r.to or [ ];
      port = r.port or null;
      scheme = r.scheme or "http";
      auth = r.auth or false;
      listen = r.listen or null;
      tls = r.tls or false;
    })
    (registry.routes or { });

  # Where a service's port is reached from another host (or the same one).
  endpoint = service: purpose: fromHost: host:
    let p = services.${service}.ports.${purpose}; in
    "${if host == fromHost then "127.0.0.1" else hosts.${host}.address}:${toString p.port}";
  # The service running a daemon on a host, or null.
  daemonOn = daemon: host:
    let found = builtins.filter (s: services.${s}.daemon == daemon && builtins.elem host services.${s}.hosts) (builtins.attrNames services); in
    if found == [ ] then null else builtins.head found;
  servicesOn = host: builtins.filter (s: builtins.elem host services.${s}.hosts) (builtins.attrNames services);
  # The host whose BIND is authoritative for the lab's zones, and the reverse
  # zone of the lab's subnet.
  authHost = builtins.head (builtins.filter (h: daemonOn "bind" h != null) (builtins.attrNames hosts) ++ [ null ]);
  reverseZone = net.reverseZone subnet;

  # When and how long backups are kept (hosts/lab.nix `backup`).
  backupSettings = facts.lab.backup;

  ctx = { inherit u net domain subnet subnetText hosts nixosHosts services routes endpoint daemonOn servicesOn authHost reverseZone backupSettings; };

  problems = import ./checks.nix ctx { inherit daemons; };

  dns = import ./dns.nix ctx;
  proxy = import ./proxy.nix ctx;
  monitoring = import ./monitoring.nix (ctx // { backupRules = backup.rules; });
  resolvers = import ./resolvers.nix ctx;
  containers = import ./containers.nix ctx;
  controllers = import ./controllers.nix ctx;
  backup = import ./backup.nix ctx;

  json = builtins.toJSON;

  # What one host runs: its services, files and settings.
  forHost = host:
    let
      has = daemon: daemonOn daemon host != null;
      settings =
        u.optionalAttrs (has "blocky") { blocky = resolvers.blocky host; }
        // u.optionalAttrs (has "adguardhome") { adguardhome = resolvers.adguardhome host; }
        // u.optionalAttrs (has "prometheus") { prometheus = monitoring.prometheus host; }
        // u.optionalAttrs (has "unifi") { unifi = controllers.unifi host; }
        // u.optionalAttrs (containers.on host != { }) { containers = containers.on host; };
      files =
        u.optionalAttrs (has "bind") (dns.bindFiles host)
        // u.optionalAttrs (has "dnsdist") { "dnsdist.conf" = dns.dnsdist host; }
        // u.optionalAttrs (has "haproxy") { "haproxy.cfg" = proxy.haproxy host; }
        // u.optionalAttrs (has "caddy") { "Caddyfile" = proxy.caddy host; }
        // u.optionalAttrs (has "nginx") {
          "nginx-status.conf" = proxy.nginxServer host;
          "status/index.html" = proxy.statusPage;
        }
        // u.optionalAttrs (has "prometheus") {
          "prometheus.yml" = json settings.prometheus.config + "\n";
          "prometheus-rules.yml" = json settings.prometheus.rules + "\n";
        }
        // u.optionalAttrs (has "blocky") { "blocky.yml" = json settings.blocky + "\n"; }
        // u.optionalAttrs (has "adguardhome") { "adguardhome.yaml" = json settings.adguardhome + "\n"; }
        // u.optionalAttrs (settings ? containers) { "containers.json" = json settings.containers + "\n"; }
        // u.optionalAttrs (has "unifi") {
          "unifi-system.properties" = u.concatMapStrings (k: "${k}=${toString settings.unifi.${k}}\n") (builtins.attrNames settings.unifi);
        }
        // backup.files host
        // {
          "firewall.json" = json (firewallOf host) + "\n";
          "health.json" = json (healthOf host) + "\n";
        };
      # The files that live under /etc on the host (environment.etc): the
      # zones where named.conf reads them, the status page where nginx does.
      etcPath = dir: builtins.substring 5 (builtins.stringLength dir) dir; # "/etc/x" -> "x"
      etc =
        u.optionalAttrs (has "bind")
          (builtins.listToAttrs (map
            (f: { name = "${etcPath dns.zoneDir}/${builtins.baseNameOf f}"; value = files.${f}; })
            (builtins.filter (f: builtins.match "zones/.*" f != null) (builtins.attrNames files))))
        // u.optionalAttrs (has "nginx") { "${etcPath proxy.statusRoot}/index.html" = proxy.statusPage; };
    in
    {
      services = u.genAttrs (servicesOn host) (s: services.${s});
      inherit etc;
      daemons = map (s: services.${s}.daemon) (servicesOn host);
      inherit files settings;
      # Each with the unit that reads it (restarted when it changes).
      secrets = map (s: s // { inherit (services.${daemonOn s.daemon host}) unit; }) (proxy.secretsOn host);
      firewall = firewallOf host;
      health = healthOf host;
      # What it backs up and where (lib/services/backup.nix), or null.
      backup = if backup.withBackup host == [ ] then null else backup.plan host;
    };

  # The ports a host opens: single ports and ranges, per protocol.
  firewallOf = host:
    let
      open = builtins.concatMap (s: builtins.filter (p: p.open) (builtins.attrValues services.${s}.ports)) (servicesOn host);
      of = proto: builtins.filter (p: builtins.elem proto p.protocols) open;
      single = proto: builtins.sort builtins.lessThan (u.unique (map (p: p.port) (builtins.filter (p: p.last == p.port) (of proto))));
      ranges = proto: map (p: { from = p.port; to = p.last; }) (builtins.filter (p: p.last != p.port) (of proto));
    in
    { tcp = single "tcp"; udp = single "udp"; tcpRanges = ranges "tcp"; udpRanges = ranges "udp"; };

  # The checks that tell a host's services are up (issue 14's deploys run
  # them): the unit is active on the host; what answers, asked from the
  # deployer where the port is on the LAN, from the host itself otherwise.
  healthOf = host: map
    (s:
      let
        svc = services.${s};
        h = svc.health;
        p = svc.ports.${h.port};
        address = if p.bind == "lan" then hosts.${host}.address else "127.0.0.1";
      in
      { service = s; inherit (svc) unit; }
      // u.optionalAttrs (h != null) (
        { from = if p.bind == "lan" then "deployer" else "host"; }
        // (if h ? dns then { dns = { server = address; port = p.port; name = "${h.dns}.${domain}"; }; }
        else { http = "http://${address}:${toString p.port}${h.http}"; })
      ))
    (servicesOn host);

  checked = value: if problems == [ ] then value else
  throw ("hosts/services.nix: " + builtins.concatStringsSep "\nhosts/services.nix: " problems);

  runningHosts = builtins.filter (h: servicesOn h != [ ]) (builtins.attrNames hosts);

  # The map in docs/services.md (scripts/render-services --update-docs
  # writes it there; scripts/check-nix fails while it is out of date).
  docMap = u.lines ([
    "| host | service | unit | ports (purpose port/protocol; open = in the firewall, lan = LAN address but closed; else loopback) | names |"
    "|---|---|---|---|---|"
  ] ++ builtins.concatMap
    (h: map
      (s:
        let svc = services.${s}; in
        "| ${h} | ${s} | `${svc.unit}` | ${builtins.concatStringsSep ", " (u.mapAttrsToList (purpose: p: "${purpose} ${u.portText p}") svc.ports)} | "
          + builtins.concatStringsSep ", " (map (n: "${n}.${domain}") svc.names) + " |")
      (servicesOn h))
    runningHosts
  ++ [
    ""
    "| route | via | to | backend port | auth |"
    "|---|---|---|---|---|"
  ] ++ map
    (r:
      let route = routes.${r}; in
      "| ${if route.via == "caddy" then "https://${r}.${domain}/" else "${r} (port ${toString services.${route.via}.ports.${route.listen}.port}${if route.tls then ", TLS" else ""})"} | ${route.via} | ${builtins.concatStringsSep ", " route.to} | ${route.port} | ${if route.auth then "admin password" else "no"} |")
    (builtins.attrNames routes));
in
checked {
  inherit domain services routes docMap;
  hosts = u.genAttrs runningHosts forHost;
  # Every host, with or without services: what the NixOS module reads.
  forHost = host: if builtins.elem host runningHosts then forHost host else
  { services = { }; daemons = [ ]; files = { }; etc = { }; settings = { }; secrets = [ ]; firewall = firewallOf host; health = [ ]; backup = null; };
}
