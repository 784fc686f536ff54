# The nix-darwin layer: what every Mac of the lab runs.
{
  imports = [
    ./defaults.nix
    ./gc.nix
    ./homebrew.nix
    ./secrets.nix
    ./users.nix
  ];
}
