# The UniFi network controller for the lab's access points and switches.
{ pkgs, ... }:
{
  services.unifi = {
    enable = true;
    # The module's default (mongodb-7_0) is built from source: no binary cache
    # carries it (unfree), so luna would compile MongoDB for hours. mongodb-ce
    # is MongoDB's own binary build (unfree too, allowed by name in
    # hosts/_modules/common/nix.nix).
    mongodbPackage = pkgs.mongodb-ce;
    # Device adoption and discovery ports (the web UI goes through the proxy).
    openFirewall = true;
  };
}
