# Our packages, in callPackage style. Exposed as the flake's `packages` and, via
# overlays.additions, as pkgs.<name> on every host.
{ pkgs }:
{
  labimg = pkgs.callPackage ./labimg/package.nix { };
  labprov = pkgs.callPackage ./labprov/package.nix { };
  kubectl-not-ready = pkgs.callPackage ./kubectl-not-ready/package.nix { };
}
