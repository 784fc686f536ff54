# The network controllers' settings: UniFi reads its ports from
# system.properties in its data directory (the NixOS module writes these
# lines there before it starts). Omada runs with its package's defaults,
# which the registry states as they are.
{ services, daemonOn, ... }:
{
  unifi = host:
    let p = services.${daemonOn "unifi" host}.ports; in
    {
      # UniFi's own names for the ports the registry gives it.
      "unifi.http.port" = p.inform.port;
      "unifi.https.port" = p.web.port;
      "portal.http.port" = p.portal-http.port;
      "portal.https.port" = p.portal-https.port;
      "unifi.stun.port" = p.stun.port;
      "unifi.db.port" = p.db.port;
    };
}
