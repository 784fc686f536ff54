# The lab's services on this host, from the registry (hosts/services.nix)
# through lib/services: which daemons run here, with the very configuration
# texts scripts/render-services writes and tests/services proves with the
# daemons themselves. Nothing about a service is written here: a new service
# is a registry entry (docs/services.md).
{ config, options, lib, ... }:
let
  cfg = config.homelab.services;
  name = config.homelab.facts.name;
  # lib/mkSystem.nix sets sops.defaultSopsFile exactly when the host's
  # secrets file exists.
  hasSecretsFile = options.sops.defaultSopsFile.isDefined;
in
{
  imports = [
    ./dns.nix
    ./proxy.nix
    ./monitoring.nix
    ./controllers.nix
    ./containers.nix
  ];

  options.homelab.services = lib.mkOption {
    type = lib.types.attrsOf lib.types.anything;
    description = ''
      This host's part of the service registry as lib/services renders it
      (services, daemons, files, etc, settings, secrets, firewall, health).
      Set by lib/mkSystem.nix; edit hosts/services.nix, never this option.
    '';
  };

  # Whether a daemon can start: every secret it reads is in the host's
  # secrets file (a daemon waiting for one stays off; see the warning below).
  options.homelab.servicesReady = lib.mkOption {
    type = lib.types.functionTo lib.types.bool;
    readOnly = true;
    default = daemon: builtins.elem daemon cfg.daemons
      && (hasSecretsFile || !(builtins.any (s: s.daemon == daemon) cfg.secrets));
    description = "Whether the registry runs DAEMON here and its secrets are in place (read by the service modules).";
  };

  config = lib.mkMerge [
    {
      # The registry's open ports, and no others (the modules' own
      # openFirewall switches stay off).
      networking.firewall = {
        allowedTCPPorts = cfg.firewall.tcp;
        allowedUDPPorts = cfg.firewall.udp;
        allowedTCPPortRanges = cfg.firewall.tcpRanges;
        allowedUDPPortRanges = cfg.firewall.udpRanges;
      };
    }

    (lib.mkIf (cfg.daemons != [ ]) {
      # Daemons bind the host's LAN address explicitly (never a wildcard, which
      # would take port 53 on Podman's bridge); let them before the link is up.
      boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind" = 1;
    })

    # Each secret a daemon here reads, from the host's secrets file, once it
    # exists; until then the daemons that need one stay off and evaluation
    # says what to do.
    (lib.mkIf hasSecretsFile {
      sops.secrets = builtins.listToAttrs (map
        (s: {
          name = s.key;
          value = { restartUnits = [ "${s.daemon}.service" ]; } // lib.optionalAttrs (s ? owner) { inherit (s) owner; };
        })
        cfg.secrets);
    })
    {
      warnings = lib.optional (cfg.secrets != [ ] && !hasSecretsFile)
        ("${name}: ${lib.concatMapStringsSep " and " (s: s.daemon) cfg.secrets} stay off until hosts/${name}/secrets.sops.yaml holds their secrets: "
          + "run `labprov secrets sync` (it writes .sops.yaml with ${name}'s key), then `sops hosts/${name}/secrets.sops.yaml` and add "
          + lib.concatMapStringsSep "; " (s: "${s.key}: ${s.what}") cfg.secrets
          + " (docs/services.md, secrets).");
    }
  ];
}
