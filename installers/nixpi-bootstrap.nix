# nixpi bootstrap: a minimal Raspberry Pi 4 system for a card flashed before
# the Pi has a host directory or a pinned key. It boots the labimg layout,
# makes its own host key on first boot and shows it for `labprov enrol`, and
# lets the admins in over SSH. Nothing secret is on it.
{ config, lib, ... }:
{
  imports = [
    ../hosts/_modules/boards/raspberry-pi-4.nix
    ../hosts/_modules/nixos/enrolment.nix
    ../hosts/_modules/nixos/sd-card.nix
  ];

  networking.hostName = "nixpi-bootstrap";

  # labimg's default labels (no host facts for a bootstrap card).
  homelab.sdCard.enable = true;
  homelab.enrolment.enable = true;

  services.openssh = {
    enable = true;
    hostKeys = [{ path = "/etc/ssh/ssh_host_ed25519_key"; type = "ed25519"; }];
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };
  users.users.root.openssh.authorizedKeys.keys = config.homelab.adminSshKeys;

  nix.settings.experimental-features = [ "nix-command" "flakes" ];

  system.stateVersion = lib.mkDefault "26.05";
}
