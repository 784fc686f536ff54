# Registry mistakes tests/services/bad-registry feeds lib/services, each
# with the message that must name it. Each case changes the real registry
# (hosts/services.nix) or the real facts in one place.
let
  registry = import ../../hosts/services.nix;
  facts = import ../../hosts/facts.nix;
  withService = name: value: registry // { services = registry.services // { ${name} = value; }; };
  withRoute = name: value: registry // { routes = registry.routes // { ${name} = value; }; };
  moveHost = host: address: facts // { hosts = facts.hosts // { ${host} = facts.hosts.${host} // { inherit address; }; }; };
in
{
  duplicate-name = {
    registry = withService "printer" { host = "luna"; unit = "cups.service"; daemon = "nginx"; names = [ "nixpi" ]; };
    expect = "name nixpi.lab is claimed twice: by host nixpi and by service printer";
  };
  duplicate-route-name = {
    registry = withRoute "dns" { via = "caddy"; to = [ "glances" ]; port = "web"; };
    expect = "name dns.lab is claimed twice: by service dnsdist and by route dns";
  };
  port-twice = {
    registry = withService "blocky" (registry.services.blocky // { ports = registry.services.blocky.ports // { dns = { port = 5300; protocol = "dns"; }; }; });
    expect = "host luna: port 5300/udp is used twice: by service bind (dns) and service blocky (dns)";
  };
  port-range-overlap = {
    registry = withService "syslog" { host = "luna"; unit = "syslog.service"; daemon = "nginx"; ports.tcp = { port = 29815; }; };
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
    registry = withService "pihole" { host = "moon"; unit = "pihole.service"; daemon = "blocky"; };
    expect = "service pihole: host moon is not a host (no hosts/moon/facts.nix)";
  };
  open-loopback-port = {
    registry = withService "glances" (registry.services.glances // { ports.web = { port = 61208; open = true; }; });
    expect = "service glances: port web: open = true, but it listens on loopback only";
  };
  unreachable-metrics = {
    registry = withService "blocky-nixpi" (registry.services.blocky-nixpi // { ports = registry.services.blocky-nixpi.ports // { metrics = { port = 4000; }; }; });
    expect = "service blocky-nixpi: its metrics port listens on loopback, which Prometheus on luna cannot scrape";
  };
}
