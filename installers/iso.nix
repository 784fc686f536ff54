# Installer ISO (x86_64 and aarch64): the NixOS minimal installer with SSH on
# and the admins' public keys, so `labprov install HOST` can reach it. The
# Nix build carries nothing secret: `labimg build installer-ARCH` adds the
# installer's SSH identity to the finished ISO as /lab/ (host key 0600, its
# .pub, authorized_keys; docs/decisions/0002-installer-keying.md), and the
# unit below installs it before sshd starts, so the installer answers with
# the key its manifest pins.
{ config, lib, modulesPath, pkgs, ... }:
let
  # iso-image.nix mounts the ISO filesystem at /iso in stage 1
  # (`lib.isoFileSystems."/iso"`, neededForBoot); labimg's files are under it.
  lab = "/iso/lab";
  hostKey = "/etc/ssh/ssh_host_ed25519_key";
in
{
  imports = [
    "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix"
  ];

  networking.hostName = "nixos-installer";

  services.openssh = {
    enable = true;
    # Only the key labimg put on the ISO: no RSA key beside it, and
    # sshd-keygen (which makes whichever listed key is missing) finds this
    # one in place and does nothing. An ISO without /lab (the unkeyed base)
    # gets a random ed25519 key from sshd-keygen, as stock NixOS does.
    hostKeys = [{ type = "ed25519"; path = hostKey; }];
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
      # Freeform sshd_config: public keys are the only method offered.
      AuthenticationMethods = "publickey";
    };
  };
  users.users.root.openssh.authorizedKeys.keys = config.homelab.adminSshKeys;
  users.users.nixos.openssh.authorizedKeys.keys = config.homelab.adminSshKeys;

  # labimg's keys, from the ISO into place before sshd (or sshd-keygen)
  # starts. sshd requires this unit, so a broken /lab (a host key without
  # authorized_keys) keeps sshd down instead of serving some other key; an
  # ISO without /lab skips it (the condition) and sshd starts as stock.
  systemd.services.homelab-installer-keys = {
    description = "Install the lab's installer SSH keys from ${lab}";
    wantedBy = [ "multi-user.target" ];
    requiredBy = [ "sshd.service" ];
    before = [ "sshd.service" "sshd-keygen.service" ];
    unitConfig = {
      RequiresMountsFor = [ "/iso" ];
      ConditionPathExists = "${lab}/ssh_host_ed25519_key";
    };
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
    };
    script = ''
      if [ ! -s ${lab}/authorized_keys ]; then
        echo "${lab} has a host key but no authorized_keys: rebuild the ISO with labimg build" >&2
        exit 1
      fi
      install -d -m 0755 -o root -g root /etc/ssh
      install -m 0600 -o root -g root ${lab}/ssh_host_ed25519_key ${hostKey}
      if [ -f ${lab}/ssh_host_ed25519_key.pub ]; then
        install -m 0644 -o root -g root ${lab}/ssh_host_ed25519_key.pub ${hostKey}.pub
      else
        ${lib.getExe' pkgs.openssh "ssh-keygen"} -y -f ${hostKey} > ${hostKey}.pub
        chmod 0644 ${hostKey}.pub
      fi
      install -d -m 0700 -o root -g root /root/.ssh
      install -m 0600 -o root -g root ${lab}/authorized_keys /root/.ssh/authorized_keys
      echo "installer: host key $(${lib.getExe' pkgs.openssh "ssh-keygen"} -lf ${hostKey}.pub)"
    '';
  };

  # `labprov install` drives the installer's own labprov (it applies the
  # host's disko spec here); its wrapper brings blkid, mount and every mkfs.
  environment.systemPackages = with pkgs; [
    labprov
    btrfs-progs
    dosfstools
    e2fsprogs
    gptfdisk
    parted
    rsync
    xfsprogs
  ];

  nix.settings.experimental-features = [ "nix-command" "flakes" ];

  # The installer's own release, not a host's.
  system.stateVersion = lib.trivial.release;
}
