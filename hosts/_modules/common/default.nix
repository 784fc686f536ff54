# Shared by every host, NixOS and nix-darwin alike.
{
  imports = [
    ./admins.nix
    ./build-fleet.nix
    ./facts.nix
    ./fonts.nix
    ./home.nix
    ./nix.nix
    ./shells.nix
    ./users.nix
  ];
}
