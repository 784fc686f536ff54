# A plain derivation run by the machine's /bin/sh and /usr/bin tools, for
# the stand-in toplevels (nixos-system.nix, ../standin-iso/standin-system.nix):
# no nixpkgs, so it builds where the Nix sandbox is off, as scripts/setup
# configures this machine's Nix.
name: script: derivation {
  inherit name;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" script ];
  PATH = "/usr/bin:/bin";
}
