# The admin's Home Manager environment on this host: which profile, and its
# state version (lib/mkSystem.nix wires Home Manager).
{ lib, ... }:
{
  options.homelab = {
    homeProfile = lib.mkOption {
      type = lib.types.enum [ "dev" "admin" "none" ];
      default = "admin";
      description = ''
        The admin's environment (home/): `dev` is the full development
        environment (editors, language toolchains, Kubernetes and
        infrastructure tools) for the development machines; `admin` is shell,
        git and an editor, for servers and the Pi; `none` gives the admin no
        Home Manager environment at all (minimal systems).
      '';
    };
    homeStateVersion = lib.mkOption {
      type = lib.types.str;
      example = "26.05";
      description = ''
        `home.stateVersion` of the admin's Home Manager environment on this host:
        the release it was first set up with. Set it once per host, never change it.
      '';
    };
  };
}
