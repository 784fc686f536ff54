# Our packages, in callPackage style. Exposed as the flake's `packages` and, via
# overlays.additions, as pkgs.<name> on every host.
{ pkgs }:
let
  # The builder the kubectl plugins share (not a package itself).
  kubectlPlugin = pkgs.callPackage ./kubectl-plugin.nix { };
  callPlugin = path: pkgs.callPackage path { inherit kubectlPlugin; };
in
{
  labimg = pkgs.callPackage ./labimg/package.nix { };
  labprov = pkgs.callPackage ./labprov/package.nix { };
  kubectl-images = callPlugin ./kubectl-images/package.nix;
  kubectl-not-ready = callPlugin ./kubectl-not-ready/package.nix;
  kubectl-restarts = callPlugin ./kubectl-restarts/package.nix;
}
