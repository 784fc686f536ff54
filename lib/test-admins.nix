# A stand-in for hosts/admins.nix that the flake's `checks` build every system
# with, so CI evaluates and builds them all before a real admin key is filled
# in (the real systems refuse to evaluate without one: lib/login-guard.nix).
# The key's private half was discarded when it was made: it opens nothing.
{
  checks = {
    description = "Flake checks (throwaway)";
    sshKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPFszlkFjF4Kuvk1WgmXDgm0lnxzPl0xsz6RRXG//6T4 homelab-checks-throwaway" ];
    ageRecipients = [ ];
  };
}
