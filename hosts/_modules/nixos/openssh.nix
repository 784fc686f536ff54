# OpenSSH, keys only, with the one ed25519 host key labprov pins and sops-nix
# decrypts with.
{ config, lib, ... }:
{
  services.openssh = {
    enable = true;
    # Only the key labprov injects (or enrolment makes); no RSA key to pin.
    hostKeys = [{ path = "/etc/ssh/ssh_host_ed25519_key"; type = "ed25519"; }];
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      # labprov deploy/status/rollback log in as root with an admin key (and
      # use TCP forwarding, `ssh -W`, for checks of loopback-only services).
      PermitRootLogin = lib.mkDefault "prohibit-password";
      X11Forwarding = false;
    };
  };

  users.users.root.openssh.authorizedKeys.keys = config.homelab.adminSshKeys;
}
