# The service modules (hosts/_modules/nixos/services) evaluated with plain Nix
# against a stand-in for the few nixpkgs lib functions they call and a
# stand-in config: not the NixOS module system (option types and merging are
# not checked; docs/upstream-options.md is where the options were read), but
# every attribute the modules read from lib/services exists, and what they
# set for each host carries the registry's values. scripts/check-nix runs it.
let
  facts = import ../../hosts/facts.nix;
  services = import ../../lib/services { };
  dir = ../../hosts/_modules/nixos/services;

  # nixpkgs lib, the parts the modules use, with the same meaning.
  lib = rec {
    mkOption = x: x;
    types = { attrsOf = _: "attrsOf"; anything = "anything"; functionTo = _: "functionTo"; bool = "bool"; };
    mkIf = cond: value: if cond then value else { };
    mkAfter = x: x;
    mkMerge = builtins.foldl' merge { };
    merge = a: b: builtins.foldl'
      (acc: name: acc // {
        ${name} =
          if !(acc ? ${name}) then b.${name}
          else if builtins.isAttrs acc.${name} && builtins.isAttrs b.${name} then merge acc.${name} b.${name}
          else if builtins.isList acc.${name} && builtins.isList b.${name} then acc.${name} ++ b.${name}
          else throw "two modules set ${name} to different values";
      })
      a
      (builtins.attrNames b);
    optional = cond: x: if cond then [ x ] else [ ];
    optionalAttrs = cond: set: if cond then set else { };
    attrValues = set: map (n: set.${n}) (builtins.attrNames set);
    findFirst = pred: default: list: let found = builtins.filter pred list; in if found == [ ] then default else builtins.head found;
    filterAttrs = pred: set: builtins.listToAttrs (map (name: { inherit name; value = set.${name}; })
      (builtins.filter (name: pred name set.${name}) (builtins.attrNames set)));
    hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
    mapAttrs = builtins.mapAttrs;
    mapAttrs' = f: set: builtins.listToAttrs (map (name: f name set.${name}) (builtins.attrNames set));
    nameValuePair = name: value: { inherit name value; };
    mapAttrsToList = f: set: map (name: f name set.${name}) (builtins.attrNames set);
    concatStrings = builtins.concatStringsSep "";
    concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
    concatMapStringsSep = sep: f: list: builtins.concatStringsSep sep (map f list);
    escapeRegex = builtins.replaceStrings [ "." ] [ "\\." ];
    optionalString = cond: s: if cond then s else "";
    splitString = sep: s: builtins.filter builtins.isString (builtins.split (escapeRegex sep) s);
    optionals = cond: list: if cond then list else [ ];
    genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    listToAttrs = builtins.listToAttrs;
    unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
    removeSuffix = suffix: s:
      let n = builtins.stringLength s; k = builtins.stringLength suffix; in
      if k <= n && builtins.substring (n - k) k s == suffix then builtins.substring 0 (n - k) s else s;
    getExe = drv: "${drv.outPath}/bin/${drv.meta.mainProgram}";
    removePrefix = prefix: s:
      let n = builtins.stringLength prefix; in
      if builtins.substring 0 n s == prefix then builtins.substring n (builtins.stringLength s - n) s else s;
  };
  pkgs = {
    writeText = name: text: builtins.toFile name text;
    mongodb-ce = "mongodb-ce";
    # A script as writeShellApplication makes it: the text, on a PATH.
    writeShellApplication = a: { outPath = "/nix/store/${a.name}"; meta.mainProgram = a.name; inherit (a) text runtimeInputs; };
    coreutils = "coreutils";
    gnused = "gnused";
    gnugrep = "gnugrep";
    util-linux = "util-linux";
    systemd = "systemd";
    restic = "restic";
    jq = "jq";
    sqlite = "sqlite";
    prometheus.cli = "promtool";
  };

  # One host's configuration as the modules set it (their `config` parts
  # merged), with a secrets file (a fixture) or none.
  evalHost = host: secretsFile:
    let
      self = services.forHost host;
      config = {
        homelab = {
          facts = facts.hosts.${host};
          services = self;
          # The option default.nix declares, with its default.
          servicesReady = (top.options.homelab.servicesReady).default;
          hasSecret = (top.options.homelab.hasSecret).default;
        };
        sops = {
          defaultSopsFile = secretsFile;
          templates = builtins.mapAttrs (name: _: { path = "/run/secrets/rendered/${name}"; }) (merged.sops.templates or { });
          secrets = builtins.mapAttrs (name: s: { path = "/run/secrets/${name}"; } // s) (merged.sops.secrets or { });
          placeholder = builtins.listToAttrs (map (s: { name = s.key; value = "<${s.key}>"; }) self.secrets);
        };
        virtualisation.podman.package = "/podman";
        programs.ssh.package = "/openssh";
      };
      options = {
        sops.defaultSopsFile.isDefined = secretsFile != null;
        services.omada = { };
      };
      modules = map (f: import (dir + "/${f}") { inherit config options lib pkgs; })
        (builtins.filter (f: f != "default.nix") (builtins.attrNames (builtins.readDir dir)));
      top = import (dir + "/default.nix") { inherit config options lib; };
      merged = lib.mkMerge (map (m: m.config) (modules ++ [ top ]));
    in
    merged;

  luna = evalHost "luna" ./fixtures/luna-secrets.sops.yaml;
  lunaFresh = evalHost "luna" null;
  lunaCacheOnly = evalHost "luna" ./fixtures/luna-cache-only.sops.yaml;
  lunaLocalBackup = evalHost "luna" ./fixtures/luna-backup-local-only.sops.yaml;
  nixpi = evalHost "nixpi" null;
  rydev = evalHost "rydev" null;
  registry = import ../../hosts/services.nix;
  expect = cond: msg: if cond then [ ] else [ msg ];
  problems =
    expect (luna.services.bind.enable && builtins.readFile luna.services.bind.configFile == services.hosts.luna.files."named.conf")
      "luna: BIND does not get the rendered named.conf"
    ++ expect (luna.environment.etc."bind/zones/db.lab".text == services.hosts.luna.files."zones/db.lab") "luna: the lab zone is not at /etc/bind/zones/db.lab"
    ++ expect
      (luna.services.dnsdist.listenPort == registry.services.dnsdist.ports.dns.port && luna.services.dnsdist.listenAddress == facts.hosts.luna.address
      && luna.services.dnsdist.extraConfig == services.hosts.luna.files."dnsdist.conf") "luna: dnsdist does not listen where the registry says, with the rendered Lua"
    ++ expect (luna.services.blocky.settings == services.hosts.luna.settings.blocky && nixpi.services.blocky.settings == services.hosts.nixpi.settings.blocky)
      "Blocky does not get the rendered settings on luna and nixpi"
    ++ expect (luna.services.adguardhome.port == registry.services.adguardhome.ports.web.port && !luna.services.adguardhome.mutableSettings)
      "luna: AdGuard Home's web port or mutability"
    ++ expect
      (builtins.readFile luna.services.caddy.configFile == services.hosts.luna.files.Caddyfile
      && luna.services.caddy.environmentFile == "/run/secrets/rendered/caddy.env"
      && luna.sops.templates."caddy.env".content == "LAB_ADMIN_PASSWORD_HASH=<caddy/admin-password-hash>\n")
      "luna: Caddy's file or its admin password's environment"
    ++ expect
      (luna.services.haproxy.config == services.hosts.luna.files."haproxy.cfg" && luna.sops.secrets."haproxy/dot.pem".owner == "haproxy"
      && builtins.match ".*ssl crt ${luna.sops.secrets."haproxy/dot.pem".path}\n.*" luna.services.haproxy.config != null)
      "luna: HAProxy's config or its certificate secret"
    ++ expect (luna.services.nginx.virtualHosts == { } && luna.environment.etc."lab-status/index.html".text == services.hosts.luna.files."status/index.html")
      "luna: Nginx keeps a default server, or the status page is not where its server block says"
    ++ expect (luna.services.prometheus.scrapeConfigs == services.hosts.luna.settings.prometheus.scrapeConfigs && luna.services.prometheus.listenAddress == "127.0.0.1")
      "luna: Prometheus' scrape jobs or address"
    ++ expect (rydev.services.prometheus.exporters.node.port == 9100 && !(rydev ? services.prometheus.enable)) "rydev: node exporter only"
    ++ expect
      (builtins.elem 53 luna.networking.firewall.allowedUDPPorts && builtins.elem 853 luna.networking.firewall.allowedTCPPorts
      && !(builtins.elem 9090 luna.networking.firewall.allowedTCPPorts) && luna.networking.firewall.allowedTCPPortRanges == [{ from = 29811; to = 29817; }])
      "luna: the firewall is not the registry's"
    ++ expect (builtins.match ".*portal.https.port=8844.*" luna.systemd.services.unifi.preStart != null) "luna: UniFi's guest portal is not moved to the registry's port"
    ++ expect (luna.services.omada.enable) "luna: no Omada"
    ++ expect
      (luna.virtualisation.oci-containers.containers == services.hosts.luna.settings.containers
      && builtins.match ".*network create uptime-kuma.*" luna.systemd.services.podman-network-uptime-kuma.script != null)
      "luna: the container or its network"
    # A fresh clone: no secrets file, the proxies stay off, evaluation warns.
    ++ expect (!(lunaFresh ? services.caddy) && !(lunaFresh ? services.haproxy) && !(lunaFresh ? sops.secrets) && lunaFresh.services.bind.enable)
      "luna without a secrets file: Caddy or HAProxy would start without their secrets"
    ++ expect (builtins.length lunaFresh.warnings == 2 && builtins.any (w: builtins.match ".*labprov secrets sync.*caddy/admin-password-hash.*haproxy/dot.pem.*" w != null) lunaFresh.warnings)
      "luna without a secrets file: the warning does not name labprov secrets sync and both secrets"
    ++ expect (luna.warnings == [ ]) "luna with its secrets: a warning"
    # A secrets file made for another key first (the binary cache's): the
    # proxies' secrets are not declared (sops-nix would fail the build on a
    # key the file lacks), they stay off, and the warning says what to add.
    ++ expect (!(lunaCacheOnly ? services.caddy) && !(lunaCacheOnly ? services.haproxy) && !(lunaCacheOnly ? sops.secrets))
      "luna with a secrets file lacking the proxies' keys: their secrets are declared anyway"
    ++ expect
      (builtins.length lunaCacheOnly.warnings == 2 && !(builtins.any (w: builtins.match ".*labprov secrets sync.*" w != null) lunaCacheOnly.warnings)
      && builtins.any (w: builtins.match ".*sops hosts/luna/secrets.sops.yaml.*caddy/admin-password-hash.*haproxy/dot.pem.*" w != null) lunaCacheOnly.warnings)
      "luna with a secrets file lacking the proxies' keys: the warning does not say which keys to add"
    ++ expect (luna.systemd.services.bind.restartTriggers == builtins.attrValues (builtins.mapAttrs (_: e: e.text) (lib.filterAttrs (n: _: lib.hasPrefix "bind/" n) luna.environment.etc)))
      "luna: a zone change does not restart BIND"
    # Backups: one restic backup per repository with the registry's paths,
    # the rendered scripts, the password from sops; the off-site one waits
    # for its address; none without the password; none on a host without
    # state; node exporter reads the metrics the scripts write.
    ++ expect
      (builtins.attrNames luna.services.restic.backups == [ "local" "remote" ]
      && luna.services.restic.backups.local.paths == services.hosts.luna.backup.paths
      && luna.services.restic.backups.local.exclude == services.hosts.luna.backup.exclude
      && luna.services.restic.backups.local.repository == "/var/backup/restic"
      && luna.services.restic.backups.remote.repositoryFile == "/run/secrets/backup/remote-repository"
      && luna.services.restic.backups.remote.passwordFile == "/run/secrets/backup/restic-password"
      && luna.services.restic.backups.local.backupPrepareCommand == "/nix/store/backup-prepare/bin/backup-prepare local"
      && luna.systemd.services.lab-restore-test-remote.serviceConfig.EnvironmentFile == "/run/secrets/backup/remote-environment"
      && luna.systemd.services.lab-restore-test-local.environment.RESTIC_REPOSITORY == "/var/backup/restic"
      && luna.systemd.services.lab-backup-prune-remote.environment.RESTIC_REPOSITORY_FILE == "/run/secrets/backup/remote-repository"
      && luna.systemd.services.lab-backup-prune-local.path == [ "/openssh" ]
      && luna.services.restic.backups.local.pruneOpts == [ ] && luna.services.restic.backups.local.checkOpts == [ ]
      && luna.services.restic.backups.local.timerConfig.OnCalendar != luna.services.restic.backups.remote.timerConfig.OnCalendar
      && builtins.elem "--collector.textfile.directory=/var/lib/prometheus-node-exporter-text" luna.services.prometheus.exporters.node.extraFlags
      && builtins.any (p: (p.meta.mainProgram or "") == "lab-backup" && "#!/bin/sh\n" + p.text == services.hosts.luna.files."lab-backup.sh") luna.environment.systemPackages)
      "luna: the restic backups, their restore tests, lab-backup or the textfile collector"
    ++ expect
      (builtins.attrNames lunaLocalBackup.services.restic.backups == [ "local" ]
      && builtins.any (w: builtins.match ".*backups to remote stay off.*backup/remote-repository.*" w != null) lunaLocalBackup.warnings)
      "luna without the off-site address: the remote backup is not held back with a warning"
    ++ expect (!(lunaFresh ? services.restic) && builtins.any (w: builtins.match ".*backups to local and remote stay off.*backup/restic-password.*" w != null) lunaFresh.warnings)
      "luna without the backup password: a backup is defined anyway, or no warning"
    ++ expect (!(nixpi ? services.restic)) "nixpi keeps no state, yet backs something up";
in
if problems == [ ] then "" else throw (builtins.concatStringsSep "; " problems)
