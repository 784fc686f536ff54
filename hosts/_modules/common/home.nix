# Per-host Home Manager state version (lib/mkSystem.nix wires Home Manager).
{ lib, ... }:
{
  options.homelab.homeStateVersion = lib.mkOption {
    type = lib.types.str;
    example = "26.05";
    description = ''
      `home.stateVersion` of the admin's Home Manager environment on this host:
      the release it was first set up with. Set it once per host, never change it.
    '';
  };
}
