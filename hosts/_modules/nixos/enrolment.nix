# First-boot enrolment: a host that boots without an injected SSH host key makes
# its own, then shows its fingerprint and age recipient on the console and
# writes them to the firmware partition (readable from any machine with a card
# reader), so `labprov enrol HOST` can pin it after the operator confirms it.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab.enrolment;
  hostKey = "/etc/ssh/ssh_host_ed25519_key";
in
{
  options.homelab.enrolment = {
    enable = lib.mkEnableOption "first-boot enrolment of a host without an injected host key";
    reportDirectory = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = if config.fileSystems ? "/boot/firmware" then "/boot/firmware" else null;
      defaultText = lib.literalExpression ''"/boot/firmware" if that is a file system, else null'';
      description = "Where to write enrolment.txt besides the console; null for the console only.";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.homelab-enrolment = {
      description = "Make and announce the SSH host key for enrolment";
      wantedBy = [ "multi-user.target" ];
      # sshd-keygen.service makes any missing host key too: run first, or the
      # two race to write the same file and the report may name the wrong key.
      before = [ "sshd-keygen.service" "sshd.service" ];
      # Only while the key is missing: an injected key means labprov already pinned it.
      unitConfig.ConditionPathExists = "!${hostKey}";
      path = [ pkgs.openssh pkgs.ssh-to-age pkgs.util-linux pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        StandardOutput = "journal+console";
      };
      script = ''
        ssh-keygen -q -t ed25519 -N "" -C "root@${config.networking.hostName}" -f ${hostKey}
        report="$(
          echo "host: ${config.networking.hostName}"
          echo "fingerprint: $(ssh-keygen -l -f ${hostKey}.pub)"
          echo "age: $(ssh-to-age < ${hostKey}.pub)"
          echo "public key: $(cat ${hostKey}.pub)"
        )"
        echo "$report"
      '' + lib.optionalString (cfg.reportDirectory != null) ''
        if mountpoint -q ${cfg.reportDirectory} || mount ${cfg.reportDirectory}; then
          echo "$report" > ${cfg.reportDirectory}/enrolment.txt
          sync
        fi
      '';
    };
  };
}
