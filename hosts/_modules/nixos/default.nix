# The NixOS layer: what every NixOS host of the lab runs.
{
  imports = [
    ./containers.nix
    ./enrolment.nix
    ./firewall.nix
    ./gc.nix
    ../common/login-guard.nix
    ./locale.nix
    ./node-exporter.nix
    ./openssh.nix
    ./sd-card.nix
    ./secrets.nix
    ./upgrades.nix
    ./users.nix
  ];
}
