# The DNS chain (docs/services.md): BIND authoritative for the lab's zones,
# Blocky and AdGuard Home filtering, dnsdist in front, each wherever the
# registry puts it, configured with lib/services' texts.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab.services;
  ready = config.homelab.servicesReady;
  daemonService = daemon: lib.findFirst (s: s.daemon == daemon) null (lib.attrValues cfg.services);
  address = p: if p.bind == "lan" then config.homelab.facts.address else "127.0.0.1";
  zones = lib.filterAttrs (path: _: lib.hasPrefix "bind/" path) cfg.etc;
in
{
  config = lib.mkMerge [
    (lib.mkIf (ready "bind") {
      services.bind = {
        enable = true;
        # Our own named.conf (listeners, the zones, rndc's key and controls as
        # the module's reload and stop expect them); checked by
        # named-checkconf in tests/services, not by the module.
        configFile = pkgs.writeText "named.conf" cfg.files."named.conf";
      };
      environment.etc = lib.mapAttrs (_: text: { inherit text; }) zones;
      # A zone change restarts BIND: a reload would not do, as `rndc reload`
      # skips zone files no newer than their last load, and these are links
      # into the store, all dated 1970.
      systemd.services.bind.restartTriggers = lib.attrValues zones;
    })

    (lib.mkIf (ready "dnsdist") {
      services.dnsdist = let p = (daemonService "dnsdist").ports.dns; in {
        enable = true;
        # The module writes setLocal() from these first; the rendered text
        # sets the same listener again and adds loopback.
        listenAddress = address p;
        listenPort = p.port;
        extraConfig = cfg.files."dnsdist.conf";
      };
    })

    (lib.mkIf (ready "blocky") {
      services.blocky = {
        enable = true;
        settings = cfg.settings.blocky;
      };
    })

    (lib.mkIf (ready "adguardhome") {
      services.adguardhome = let web = (daemonService "adguardhome").ports.web; in {
        enable = true;
        # The registry is the source: the file is rewritten on every start.
        mutableSettings = false;
        # The module sets settings.http from these (the same address).
        host = address web;
        port = web.port;
        settings = cfg.settings.adguardhome;
      };
    })
  ];
}
