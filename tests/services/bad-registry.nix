# Registry mistakes tests/services/bad-registry feeds lib/services, each
# with the message that must name it. Each case changes the real registry
# (hosts/services.nix) or the real facts in one place.
let
  registry = import ../../hosts/services.nix;
  facts = import ../../hosts/facts.nix;
  withService = name: value: registry // { services = registry.services // { ${name} = value; }; };
  withRoute = name: value: registry // { routes = registry.routes // { ${name} = value; }; };
  pinned = "docker.io/library/busybox@sha256:${builtins.hashString "sha256" "test"}";
  moveHost = host: address: facts // { hosts = facts.hosts // { ${host} = facts.hosts.${host} // { inherit address; }; }; };
in
{
  duplicate-name = {
    registry = withService "printer" { host = "rydev"; unit = "nginx.service"; daemon = "nginx"; ports.http = { port = 631; }; names = [ "nixpi" ]; };
    expect = "name nixpi.lab is claimed twice: by host nixpi and by service printer";
  };
  duplicate-route-name = {
    registry = withRoute "dns" { via = "caddy"; to = [ "glances" ]; port = "web"; };
    expect = "name dns.lab is claimed twice: by service dnsdist and by route dns";
  };
  port-twice = {
    registry = withService "blocky" (registry.services.blocky // { ports = registry.services.blocky.ports // { dns = { port = 5300; protocol = "dns"; }; }; });
    expect = "host luna: port 5300/udp and tcp is used twice: by service bind (dns) and service blocky (dns)";
  };
  port-range-overlap = {
    registry = withService "syslog" { host = "luna"; unit = "podman-syslog.service"; container.image = pinned; ports.tcp = { port = 29815; }; };
    expect = "host luna: port 29815/tcp is used twice: by service omada (devices) and service syslog (tcp)";
  };
  route-to-unknown-service = {
    registry = withRoute "grafana" { via = "caddy"; to = [ "grafana" ]; port = "web"; };
    expect = "route grafana: to grafana, which is not a service in the registry";
  };
  route-to-unknown-port = {
    registry = withRoute "kuma" { via = "caddy"; to = [ "uptime-kuma" ]; port = "admin"; };
    expect = "route kuma: service uptime-kuma has no port admin";
  };
  address-outside-subnet = {
    facts = moveHost "nixpi" "10.0.0.40";
    expect = "host nixpi: address 10.0.0.40 is outside the lab subnet";
  };
  unknown-host = {
    registry = withService "pihole" { host = "moon"; unit = "podman-pihole.service"; container.image = pinned; };
    expect = "service pihole: host moon is not a host (no hosts/moon/facts.nix)";
  };
  open-loopback-port = {
    registry = withService "glances" (registry.services.glances // { ports.web = { port = 61208; open = true; }; });
    expect = "service glances: port web: open = true, but it listens on loopback only";
  };
  port-not-a-number = {
    registry = withService "glances" (registry.services.glances // { ports.web = { port = "61208"; }; });
    expect = "service glances: port web: 61208..61208 is not a port or range from 1 to 65535";
  };
  port-clash-with-the-cache = {
    registry = withService "glances" (registry.services.glances // { ports.web = { port = 5000; }; });
    expect = "host luna: port 5000/tcp is used twice: by service glances (web) and service nix-serve (cache (hosts/luna/facts.nix))";
  };
  route-without-port = {
    registry = withRoute "kuma" { via = "caddy"; to = [ "uptime-kuma" ]; };
    expect = "route kuma: no port";
  };
  route-name-not-a-label = {
    registry = withRoute "Kuma_UI" { via = "caddy"; to = [ "uptime-kuma" ]; port = "web"; };
    expect = "route Kuma_UI: Kuma_UI is not a DNS label";
  };
  route-to-every-host = {
    registry = withRoute "nodes" { via = "caddy"; to = [ "node-exporter" ]; port = "metrics"; };
    expect = "route nodes: a service on several hosts cannot be a backend";
  };
  daemon-without-its-port = {
    registry = withService "blocky" (registry.services.blocky // { ports = { inherit (registry.services.blocky.ports) dns; }; metrics = null; });
    expect = "service blocky: daemon blocky needs ports.metrics";
  };
  daemon-twice-on-a-host = {
    registry = withService "bind2" (registry.services.bind // { daemon = "bind"; ports.dns = { port = 5353; protocol = "dns"; }; });
    expect = "host luna: daemon bind is run by bind and bind2; one service per daemon and host";
  };
  address-twice = {
    facts = moveHost "rydev" "192.168.1.40";
    expect = "address 192.168.1.40 is given to more than one host: nixpi and rydev";
  };
  unreachable-metrics = {
    registry = withService "blocky-nixpi" (registry.services.blocky-nixpi // { ports = registry.services.blocky-nixpi.ports // { metrics = { port = 4000; }; }; });
    expect = "service blocky-nixpi: its metrics port listens on loopback, which Prometheus on luna cannot scrape";
  };
  backup-relative-path = {
    registry = withService "glances" (registry.services.glances // { backup.paths = [ "var/lib/glances" ]; });
    expect = "service glances: backup path var/lib/glances is not an absolute path without spaces, quotes, $ or backquotes";
  };
  backup-path-with-quote = {
    registry = withService "glances" (registry.services.glances // { backup.paths = [ "/var/lib/it's" ]; });
    expect = "service glances: backup path /var/lib/it's is not an absolute path without spaces, quotes, $ or backquotes";
  };
  backup-path-with-dollar = {
    registry = withService "glances" (registry.services.glances // { backup.paths = [ "/var/lib/$HOME" ]; });
    expect = "service glances: backup path /var/lib/$HOME is not an absolute path without spaces, quotes, $ or backquotes";
  };
  backup-stop-without-service-unit = {
    registry = withService "glances" (registry.services.glances // { unit = "glances.socket"; backup = { paths = [ "/var/lib/glances" ]; stop = true; }; });
    expect = "service glances: backup.stop needs the service's unit to be a .service";
  };
  backup-check-outside = {
    registry = withService "uptime-kuma" (registry.services.uptime-kuma // { backup = registry.services.uptime-kuma.backup // { checks.sqlite = [ "/var/lib/other/kuma.db" ]; }; });
    expect = "service uptime-kuma: backup check /var/lib/other/kuma.db is not inside its backup.paths";
  };
  backup-unknown-check = {
    registry = withService "uptime-kuma" (registry.services.uptime-kuma // { backup = registry.services.uptime-kuma.backup // { checks.mysql = [ ]; }; });
    expect = "service uptime-kuma: backup.checks.mysql is not a check the restore test knows (sqlite, tsdb)";
  };
  backup-without-repository = {
    registry = withService "blocky-nixpi" (registry.services.blocky-nixpi // { backup.paths = [ "/var/lib/blocky" ]; });
    expect = "service blocky-nixpi: host nixpi has no backup.repositories in its facts (hosts/nixpi/facts.nix)";
  };
}
