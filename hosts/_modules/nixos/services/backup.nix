# Backups of the services' state with restic (docs/operations.md, "Backups"),
# from the plan lib/services/backup.nix renders out of the registry: one
# services.restic.backups entry per repository (its own unit and timer),
# the password and the off-site address from sops, the prepare and cleanup
# scripts tests/backup runs with real restic, a restore test per repository
# on a timer, and node exporter's textfile collector for the stale-backup
# alerts. A host whose registry services keep no state backs up nothing.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab.services;
  plan = cfg.backup;
  name = config.homelab.facts.name;
  has = config.homelab.hasSecret;
  secret = key: config.sops.secrets.${key}.path;

  # The rendered scripts, with what they call on their PATH. Their own
  # `#!/bin/sh` line goes: writeShellApplication writes its own first line
  # (and shellcheck refuses a shebang below it).
  script = file: pkgs.writeShellApplication {
    name = lib.removeSuffix ".sh" file;
    runtimeInputs = [ pkgs.coreutils pkgs.gnused pkgs.gnugrep pkgs.util-linux pkgs.systemd pkgs.restic pkgs.jq pkgs.sqlite pkgs.prometheus.cli ];
    text = lib.removePrefix "#!/bin/sh\n" cfg.files.${file};
  };
  prepare = script "backup-prepare.sh";
  cleanup = script "backup-cleanup.sh";
  restoreTest = script "backup-restore-test.sh";
  prune = script "backup-prune.sh";
  command = script "lab-backup.sh";

  # A repository is usable once every secret it reads is in the host's file.
  needs = r: [ plan.secrets.password.key ] ++ lib.optionals (r ? repositoryFile) [ r.repositoryFile r.environmentFile ];
  ready = builtins.filter (r: builtins.all has (needs r)) plan.repositories;
  waiting = builtins.filter (r: !(builtins.all has (needs r))) plan.repositories;
  secretKeys = lib.unique (builtins.concatMap needs ready);

  # What restic needs to reach a repository, for the backup and the test.
  where = r: if r ? repository then { repository = r.repository; } else {
    repositoryFile = secret r.repositoryFile;
    environmentFile = secret r.environmentFile;
  };
  environment = r: {
    RESTIC_PASSWORD_FILE = secret plan.secrets.password.key;
    RESTIC_CACHE_DIR = "/var/cache/lab-backup-${r.name}";
  } // (if r ? repository then { RESTIC_REPOSITORY = r.repository; } else { RESTIC_REPOSITORY_FILE = secret r.repositoryFile; });

  # Our own units beside the module's (the restore test, the prune): the
  # repository's settings, and ssh for an SFTP repository (as the module
  # gives its own units).
  resticUnit = r: description: exec: {
    inherit description;
    wants = [ "network-online.target" ];
    after = [ "network-online.target" "restic-backups-${r.name}.service" ];
    environment = environment r;
    path = [ config.programs.ssh.package ];
    serviceConfig = {
      Type = "oneshot";
      ExecStart = "${lib.getExe exec} ${r.name}";
      PrivateTmp = true;
      CacheDirectory = "lab-backup-${r.name}";
    } // lib.optionalAttrs (r ? environmentFile) { EnvironmentFile = secret r.environmentFile; };
  };
in
{
  config = lib.mkIf (plan != null) (lib.mkMerge [
    {
      warnings = lib.optional (waiting != [ ])
        ("${name}: backups to ${lib.concatMapStringsSep " and " (r: r.name) waiting} stay off until hosts/${name}/secrets.sops.yaml holds "
          + lib.concatMapStringsSep "; " (k: "${k}: ${(lib.findFirst (s: s.key == k) null (lib.attrValues plan.secrets)).what}")
          (lib.unique (builtins.filter (k: !(has k)) (builtins.concatMap needs waiting)))
          + " (docs/operations.md, Backups).");

      # Node exporter reads the backups' metrics from here (the cleanup and
      # the restore test write them).
      systemd.tmpfiles.rules = [ "d ${plan.textfileDir} 0755 root root -" ];
      services.prometheus.exporters.node.extraFlags = [ "--collector.textfile.directory=${plan.textfileDir}" ];
      # `lab-backup run|restore-test|status` by hand (labprov backup runs it).
      environment.systemPackages = [ command ];
    }

    (lib.mkIf (ready != [ ]) {
      sops.secrets = lib.genAttrs secretKeys (_: { });

      services.restic.backups = lib.listToAttrs (map
        (r: lib.nameValuePair r.name (where r // {
          passwordFile = secret plan.secrets.password.key;
          initialize = true;
          paths = plan.paths;
          exclude = plan.exclude;
          timerConfig = { OnCalendar = r.schedule; Persistent = true; RandomizedDelaySec = "30m"; };
          # The unit only backs up, so the services it stops are back as
          # soon as restic has read them: retention and the check of the
          # packs run after it, in lab-backup-prune-NAME (the cleanup
          # starts it on success). runCheck follows checkOpts: off.
          pruneOpts = [ ];
          checkOpts = [ ];
          backupPrepareCommand = "${lib.getExe prepare} ${r.name}";
          backupCleanupCommand = "${lib.getExe cleanup} ${r.name}";
        }))
        ready);

      systemd.services = lib.listToAttrs (builtins.concatMap
        (r: [
          (lib.nameValuePair "lab-restore-test-${r.name}" (resticUnit r "Restore test of the ${r.name} backup repository" restoreTest))
          (lib.nameValuePair "lab-backup-prune-${r.name}" (resticUnit r "Retention and a check of the ${r.name} backup repository" prune))
        ])
        ready);
      systemd.timers = lib.listToAttrs (map
        (r: lib.nameValuePair "lab-restore-test-${r.name}" {
          wantedBy = [ "timers.target" ];
          timerConfig = { OnCalendar = plan.restoreTestSchedule; Persistent = true; RandomizedDelaySec = "1h"; };
        })
        ready);
    })
  ]);
}
