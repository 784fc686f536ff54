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
  secretsFile = if options.sops.defaultSopsFile.isDefined then config.sops.defaultSopsFile else null;
  # Whether the secrets file holds KEY ("caddy/admin-password-hash" is
  # `admin-password-hash` under `caddy`, as sops-nix reads it). sops leaves
  # the keys in clear, so this is read here: declaring a secret the file
  # lacks would fail the host's build in sops-nix's check instead.
  hasKey = key:
    let
      path = lib.splitString "/" key;
      step = state: line:
        let m = builtins.match "( *)([^ :#][^:]*):.*" line; in
        if m == null then state
        else if builtins.elemAt m 0 == "" then state // {
          top = builtins.elemAt m 1;
          found = state.found || path == [ (builtins.elemAt m 1) ];
        }
        else state // { found = state.found || path == [ state.top (builtins.elemAt m 1) ]; };
      lines = builtins.filter builtins.isString (builtins.split "\n" (builtins.readFile secretsFile));
    in
    secretsFile != null && (builtins.foldl' step { top = null; found = false; } lines).found;
  present = builtins.filter (s: hasKey s.key) cfg.secrets;
  missing = builtins.filter (s: !(hasKey s.key)) cfg.secrets;
in
{
  imports = [
    ./dns.nix
    ./proxy.nix
    ./monitoring.nix
    ./controllers.nix
    ./containers.nix
    ./backup.nix
  ];

  options.homelab.services = lib.mkOption {
    type = lib.types.attrsOf lib.types.anything;
    description = ''
      This host's part of the service registry as lib/services renders it
      (services, daemons, files, etc, settings, secrets, firewall, health).
      Set by lib/mkSystem.nix; edit hosts/services.nix, never this option.
    '';
  };

  options.homelab.hasSecret = lib.mkOption {
    type = lib.types.functionTo lib.types.bool;
    readOnly = true;
    default = hasKey;
    description = "Whether the host's secrets file holds KEY (\"a/b\" is `b` under `a`), read without decrypting.";
  };

  # Whether a daemon can start: every secret it reads is in the host's
  # secrets file (a daemon waiting for one stays off; see the warning below).
  options.homelab.servicesReady = lib.mkOption {
    type = lib.types.functionTo lib.types.bool;
    readOnly = true;
    default = daemon: builtins.elem daemon cfg.daemons
      && !(builtins.any (s: s.daemon == daemon) missing);
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

    # Each secret a daemon here reads and the host's secrets file holds;
    # until it does, the daemon stays off and evaluation says what to do.
    (lib.mkIf (present != [ ]) {
      sops.secrets = builtins.listToAttrs (map
        (s: {
          name = s.key;
          value = { restartUnits = [ s.unit ]; }
            // lib.optionalAttrs (s ? owner) { inherit (s) owner; }
            # Where the rendered configuration reads it (sops-nix's default).
            // lib.optionalAttrs (s ? path) { inherit (s) path; };
        })
        present);
    })
    {
      warnings = lib.optional (missing != [ ])
        ("${name}: ${lib.concatMapStringsSep " and " (s: s.daemon) missing} stay off until hosts/${name}/secrets.sops.yaml holds their secrets: "
          + lib.optionalString (secretsFile == null) "run `labprov secrets sync` (it writes .sops.yaml with ${name}'s key), then "
          + "`sops hosts/${name}/secrets.sops.yaml` and add "
          + lib.concatMapStringsSep "; " (s: "${s.key}: ${s.what}") missing
          + " (docs/services.md, secrets).");
    }
  ];
}
