# Nix itself: flakes on, the admins trusted, the store kept small.
{ config, lib, ... }:
{
  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    # Admins deploy with --target-host and copy closures they built.
    trusted-users = [ "root" config.homelab.user ];
  };

  # Our packages (pkgs/) and nothing unfree unless named here.
  nixpkgs.config.allowUnfreePredicate = pkg: lib.elem (lib.getName pkg) [
    "prl-tools" # Parallels guest tools on rydev
    "terraform" # BSL-licensed since 1.6
    "vscode"
    # The UniFi controller on luna and the MongoDB it needs (SSPL).
    "unifi-controller"
    "mongodb"
    "mongodb-ce"
    # The Omada controller on luna (services.omada).
    "omada-software-controller"
  ];
}
