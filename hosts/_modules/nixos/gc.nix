# Keep the store small: weekly garbage collection and store optimisation.
{ lib, ... }:
{
  nix.gc = {
    automatic = lib.mkDefault true;
    dates = lib.mkDefault "weekly";
    options = lib.mkDefault "--delete-older-than 30d";
  };
  nix.optimise.automatic = lib.mkDefault true;
}
