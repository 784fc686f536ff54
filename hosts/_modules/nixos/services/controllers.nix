# The network controllers (docs/services.md): UniFi and Omada, both on luna,
# their ports from the registry.
{ config, options, lib, pkgs, ... }:
let
  cfg = config.homelab.services;
  ready = config.homelab.servicesReady;
in
{
  config = lib.mkMerge [
    (lib.mkIf (ready "unifi") {
      services.unifi = {
        enable = true;
        # The module's default (mongodb-7_0) is built from source: no binary
        # cache carries it (unfree), so luna would compile MongoDB for hours.
        # mongodb-ce is MongoDB's own binary build (allowed by name in
        # hosts/_modules/common/nix.nix).
        mongodbPackage = pkgs.mongodb-ce;
        # The registry opens the ports (hosts/services.nix).
        openFirewall = false;
      };
      # UniFi reads its ports from system.properties in its data directory,
      # a file it also writes: set ours, keep the rest.
      systemd.services.unifi.preStart = lib.mkAfter ''
        props=/var/lib/unifi/data/system.properties
        mkdir -p "$(dirname "$props")"
        touch "$props"
        ${lib.concatStrings (lib.mapAttrsToList (key: port: ''
          sed -i '/^${lib.escapeRegex key}=/d' "$props"
          echo '${key}=${toString port}' >> "$props"
        '') cfg.settings.unifi)}
      '';
    })

    # nixpkgs' module (x86_64 only, unfree: allowed by name in
    # hosts/_modules/common/nix.nix); the registry opens its ports. Read near
    # the pin, not at it (docs/upstream-options.md): without the module, a
    # clear assertion instead of "option does not exist" on every host.
    (lib.mkIf (ready "omada") (lib.optionalAttrs (options.services ? omada) {
      services.omada.enable = true;
    }))
    {
      assertions = lib.optional (builtins.elem "omada" cfg.daemons) {
        assertion = options.services ? omada;
        message = "hosts/services.nix runs omada on ${config.homelab.facts.name}, but this nixpkgs has no services.omada module: run it as a container (a `container` entry in the registry) or update nixpkgs.";
      };
    }
  ];
}
