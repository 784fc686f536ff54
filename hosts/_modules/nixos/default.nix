# The NixOS layer: what every NixOS host of the lab runs.
{
  imports = [
    ../common/login-guard.nix
    ./build-server.nix
    ./containers.nix
    ./enrolment.nix
    ./firewall.nix
    ./gc.nix
    ./locale.nix
    ./openssh.nix
    ./sd-card.nix
    ./secrets.nix
    ./services
    ./upgrades.nix
    ./users.nix
  ];
}
