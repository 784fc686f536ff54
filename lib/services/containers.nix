# OCI containers (Podman, virtualisation.oci-containers): every registry
# service with a `container` runs as one, from an image pinned by digest, on
# its own network, its state in named volumes. Published ports follow the
# registry: loopback ones on 127.0.0.1 only.
{ hosts, services, servicesOn, ... }:
let
  publish = p:
    let
      range = if p.last != p.port then "${toString p.port}-${toString p.last}" else toString p.port;
      suffixes = map (proto: if proto == "udp" then "/udp" else "") p.protocols;
    in
    map (sfx: "${if p.bind == "lan" then "" else "127.0.0.1:"}${range}:${range}${sfx}") suffixes;
in
{
  on = host: builtins.listToAttrs (map
    (s:
      let c = services.${s}.container; in
      {
        name = s;
        value = {
          inherit (c) image;
          ports = builtins.concatMap publish (builtins.attrValues services.${s}.ports);
          volumes = map (v: "${s}-${v.name}:${v.path}") c.volumes;
          networks = [ s ];
          environment = { TZ = hosts.${host}.timeZone; } // (c.environment or { });
        };
      })
    (builtins.filter (s: services.${s}.container != null) (servicesOn host)));
}
