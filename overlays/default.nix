# Package overlays, applied to every host and to the flake's packages.
{
  # Our own packages (pkgs/): labimg, labprov and the kubectl plugins.
  additions = final: _prev: import ../pkgs { pkgs = final; };

  # Changes to upstream packages. None yet; each one gets a comment saying why
  # it exists and when it can go.
  modifications = _final: _prev: { };
}
