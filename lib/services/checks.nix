# The registry's mistakes, each a sentence naming the entry (lib/services
# refuses to render while there is one). tests/services/bad-registry feeds it
# each kind of mistake.
{ u, net, domain, subnet, subnetText, hosts, services, routes, ... }:
{ daemons }:
let
  validPort = n: builtins.isInt n && n >= 1 && n <= 65535;
  label = "[a-z0-9]([a-z0-9-]*[a-z0-9])?";

  lab = (if subnet == null || !(builtins.elem subnet.prefixLength [ 8 16 24 ])
  then [ "hosts/lab.nix: network.subnet ${subnetText} is not an IPv4 subnet with a prefix length of 8, 16 or 24" ] else [ ])
  ++ u.optional (builtins.match label domain == null) "hosts/lab.nix: network.domain ${domain} is not a single DNS label";

  addresses = builtins.concatMap
    (h:
      let a = hosts.${h}.address or null; in
      u.optional (a != null && subnet != null && !(net.contains subnet a))
        "host ${h}: address ${a} is outside the lab subnet (hosts/lab.nix network.subnet)")
    (builtins.attrNames hosts);

  # The ports (by purpose) each daemon's renderer and NixOS module read.
  needs = {
    bind = [ "dns" ];
    blocky = [ "dns" "metrics" ];
    adguardhome = [ "dns" "web" ];
    dnsdist = [ "dns" "metrics" ];
    caddy = [ "http" "https" ];
    haproxy = [ "metrics" ];
    nginx = [ "http" ];
    prometheus = [ "web" ];
    node-exporter = [ "metrics" ];
    glances = [ "web" ];
    unifi = [ "web" "inform" "stun" "portal-http" "portal-https" "db" ];
  };

  serviceProblems = name:
    let
      s = services.${name};
      where = "service ${name}";
      portProblems = builtins.concatMap
        (p:
          let at = "${where}: port ${p.purpose}"; in
          u.optional (!(validPort p.port && validPort p.last && p.last >= p.port)) "${at}: ${toString p.port}..${toString p.last} is not a port or range from 1 to 65535"
          ++ u.optional (p.protocols == [ ]) "${at}: protocol ${p.protocol} is not tcp, udp or dns"
          ++ u.optional (!(builtins.elem p.bind [ "loopback" "lan" ])) "${at}: bind ${p.bind} is not loopback or lan"
          ++ u.optional (p.open && p.bind != "lan") "${at}: open = true, but it listens on loopback only (bind = \"lan\")")
        (builtins.attrValues s.ports);
      hasPort = purpose: purpose != null && s.ports ? ${purpose};
    in
    u.optional (s.host == null) "${where}: no host"
    ++ builtins.concatMap
      (h:
        if h == null then [ ]
        else if !(hosts ? ${h}) then [ "${where}: host ${h} is not a host (no hosts/${h}/facts.nix)" ]
        else u.optional (!(hosts.${h} ? address)) "${where}: host ${h} has no address in its facts")
      s.hosts
    ++ u.optional (!(builtins.elem s.daemon daemons)) "${where}: daemon ${s.daemon} is not one lib/services renders (${builtins.concatStringsSep ", " daemons})"
    ++ builtins.concatMap (purpose: u.optional (!(s.ports ? ${purpose})) "${where}: daemon ${s.daemon} needs ports.${purpose}") (needs.${s.daemon} or [ ])
    ++ u.optionals (s.daemon == "container") (
      u.optional (!(s.container ? image)) "${where}: container needs an image"
      ++ u.optional (!builtins.all (v: v ? name && v ? path) (s.container.volumes or [ ])) "${where}: container volumes are { name; path; }"
    )
    ++ u.optional (s.unit == null) "${where}: no unit (the systemd unit a deploy checks)"
    ++ portProblems
    ++ u.optional (s.metrics != null && !(hasPort (s.metrics.port or null))) "${where}: metrics.port names no port of the service"
    ++ u.optional (s.health != null && !(hasPort (s.health.port or null))) "${where}: health.port names no port of the service"
    ++ u.optional (s.health != null && !(s.health ? dns || s.health ? http)) "${where}: health needs dns = NAME or http = PATH"
    ++ builtins.concatMap (n: u.optional (builtins.match label n == null) "${where}: name ${n} is not a DNS label") s.names
    ++ backupProblems where s;

  # A backup's paths end up quoted in shell scripts (lib/services/backup.nix):
  # absolute, without spaces or quotes; what its restore test checks lies
  # inside what it backs up.
  safePath = d: builtins.isString d && builtins.match "/[^ '\"\\$`]*" d != null;
  inside = d: builtins.any (p: d == p || builtins.substring 0 (builtins.stringLength p + 1) d == p + "/");
  backupProblems = where: s: u.optionals (s.backup != null) (
    let b = s.backup; in
    u.optional (b.paths == [ ]) "${where}: backup.paths is empty"
    ++ u.optional (b.stop && (s.unit == null || builtins.match ".*\\.service" s.unit == null)) "${where}: backup.stop needs the service's unit to be a .service"
    ++ builtins.concatMap (d: u.optional (!(safePath d)) "${where}: backup path ${toString d} is not an absolute path without spaces, quotes, $ or backquotes") b.paths
    ++ builtins.concatMap (d: u.optional (!(builtins.isString d) || builtins.match "[^'\n]+" d == null) "${where}: backup exclude ${toString d} is empty or has a quote") b.exclude
    ++ builtins.concatMap (k: u.optional (!(builtins.elem k [ "sqlite" "tsdb" ])) "${where}: backup.checks.${k} is not a check the restore test knows (sqlite, tsdb)") (builtins.attrNames b.checks)
    ++ builtins.concatMap
      (d: u.optional (!(safePath d) || !(inside d b.paths)) "${where}: backup check ${toString d} is not inside its backup.paths")
      (builtins.concatLists (builtins.attrValues b.checks))
    ++ builtins.concatMap
      (h:
        let repos = hosts.${h}.backup.repositories or { }; in
        u.optional (repos == { }) "${where}: host ${h} has no backup.repositories in its facts (hosts/${h}/facts.nix)"
        ++ builtins.concatMap
          (r: u.optional (builtins.match "[a-z][a-z0-9-]*" r == null) "${where}: host ${h}: backup repository name ${r} is not lower-case letters, digits and -"
          ++ u.optional (!((repos.${r} ? path && safePath repos.${r}.path) || (repos.${r}.remote or false) == true))
            "${where}: host ${h}: backup repository ${r} needs path = \"/absolute\" or remote = true")
          (builtins.attrNames repos))
      s.hosts
  );

  # Two services on one host on the same port and protocol (ranges overlap).
  instances = builtins.concatMap (s: map (h: { service = s; host = h; }) services.${s}.hosts) (builtins.attrNames services);
  claims = builtins.concatMap
    (i: builtins.concatMap
      (p: map (proto: { inherit (i) host service; inherit proto; inherit (p) purpose port last; }) p.protocols)
      (builtins.filter (p: validPort p.port && validPort p.last) (builtins.attrValues services.${i.service}.ports)))
    instances
  # The binary cache a host serves (its facts, hosts/_modules/nixos/build-server.nix).
  ++ builtins.concatMap
    (h: u.optional (hosts.${h} ? cache && validPort (hosts.${h}.cache.port or null))
      { host = h; service = "nix-serve"; proto = "tcp"; purpose = "cache (hosts/${h}/facts.nix)"; port = hosts.${h}.cache.port; last = hosts.${h}.cache.port; })
    (builtins.attrNames hosts);
  clash = a: b: a.host == b.host && a.proto == b.proto && a.port <= b.last && b.port <= a.last
    && (a.service != b.service || a.purpose != b.purpose);
  # One message per pair of ports that meet, naming every protocol they share.
  clashes = builtins.concatMap
    (a: builtins.concatMap
      (b: u.optional (clash a b && (a.service < b.service || a.service == b.service && a.purpose < b.purpose)) {
        key = "host ${a.host}: port ${toString (if a.port > b.port then a.port else b.port)}";
        pair = "by service ${a.service} (${a.purpose}) and service ${b.service} (${b.purpose})";
        inherit (a) proto;
      })
      claims)
    claims;
  portClashes = map
    (c: "${c.key}/${builtins.concatStringsSep " and " (u.unique (map (x: x.proto) (builtins.filter (x: x.key == c.key && x.pair == c.pair) clashes)))} is used twice: ${c.pair}")
    (u.unique (map (c: { inherit (c) key pair; }) clashes));

  routeProblems = name:
    let
      r = routes.${name};
      where = "route ${name}";
      proxy = services.${r.via} or null;
    in
    if !(builtins.elem r.via [ "caddy" "haproxy" ]) then [ "${where}: via ${toString r.via} is not caddy or haproxy" ]
    else if proxy == null then [ "${where}: via ${r.via}, but no service ${r.via} is in the registry" ]
    else if !(builtins.isString r.port) then [ "${where}: no port (the purpose of its services' port)" ]
    else
      u.optional (r.via == "caddy" && builtins.match label name == null) "${where}: ${name} is not a DNS label"
      ++ u.optional (builtins.any (t: builtins.length (services.${t}.hosts or [ ]) > 1) r.to) "${where}: a service on several hosts cannot be a backend (one host each)"
      ++
      u.optional (r.to == [ ]) "${where}: to names no service"
      ++ builtins.concatMap
        (t:
          if !(services ? ${t}) then [ "${where}: to ${t}, which is not a service in the registry" ]
          else u.optional (!(services.${t}.ports ? ${r.port})) "${where}: service ${t} has no port ${toString r.port}"
          ++ u.optional
            (services.${t}.ports ? ${r.port} && builtins.head services.${t}.hosts != builtins.head proxy.hosts
            && services.${t}.ports.${r.port}.bind != "lan")
            "${where}: service ${t} listens on loopback on ${builtins.head services.${t}.hosts}, which ${r.via} on ${builtins.head proxy.hosts} cannot reach (bind = \"lan\")")
        r.to
      ++ u.optionals (r.via == "caddy") (
        u.optional (builtins.length r.to != 1) "${where}: a caddy route has one service behind it"
        ++ u.optional (!(builtins.elem r.scheme [ "http" "https" ])) "${where}: scheme ${r.scheme} is not http or https"
      )
      ++ u.optional (r.via == "haproxy" && !(proxy.ports ? ${toString r.listen})) "${where}: listen names no port of service haproxy";

  # Every DNS name in the zone belongs to one host, service or route.
  nameClaims = map (h: { name = h; by = "host ${h}"; }) (builtins.attrNames hosts)
    ++ builtins.concatMap (s: map (n: { name = n; by = "service ${s}"; }) services.${s}.names) (builtins.attrNames services)
    ++ map (r: { name = r; by = "route ${r}"; }) (builtins.filter (r: routes.${r}.via == "caddy") (builtins.attrNames routes));
  nameClashes = map
    (n: "name ${n}.${domain} is claimed twice: by ${builtins.concatStringsSep " and by " (map (c: c.by) (builtins.filter (c: c.name == n) nameClaims))}")
    (u.duplicates (map (c: c.name) nameClaims));

  # Prometheus must reach every metrics port it scrapes.
  prometheusHost = if services ? prometheus then builtins.head services.prometheus.hosts else null;
  unreachableMetrics = builtins.concatMap
    (s:
      let svc = services.${s}; p = svc.ports.${svc.metrics.port}; in
      u.optional (prometheusHost != null && p.bind != "lan" && builtins.any (h: h != prometheusHost) svc.hosts)
        "service ${s}: its metrics port listens on loopback, which Prometheus on ${prometheusHost} cannot scrape (bind = \"lan\")")
    (builtins.filter (s: services.${s}.metrics != null && services.${s}.ports ? ${services.${s}.metrics.port or ""}) (builtins.attrNames services));
  # One service per daemon and host (renderers and modules take one); any
  # number of containers.
  daemonClashes = builtins.concatMap
    (h:
      let
        on = builtins.filter (i: i.host == h && services.${i.service}.daemon != "container") instances;
        daemonsHere = map (i: services.${i.service}.daemon) on;
      in
      map (d: "host ${h}: daemon ${d} is run by ${builtins.concatStringsSep " and " (map (i: i.service) (builtins.filter (i: services.${i.service}.daemon == d) on))}; one service per daemon and host")
        (u.duplicates daemonsHere))
    (builtins.attrNames hosts);

  addressClashes = map
    (a: "address ${a} is given to more than one host: ${builtins.concatStringsSep " and " (builtins.filter (h: (hosts.${h}.address or null) == a) (builtins.attrNames hosts))}")
    (u.duplicates (builtins.concatMap (h: u.optional (hosts.${h} ? address) hosts.${h}.address) (builtins.attrNames hosts)));
in
if lab != [ ] then lab else
addresses
++ addressClashes
++ builtins.concatMap serviceProblems (builtins.attrNames services)
++ daemonClashes
++ portClashes
++ builtins.concatMap routeProblems (builtins.attrNames routes)
++ nameClashes
++ unreachableMetrics
