# The lab's host facts (hosts/facts.nix): this host's own as
# config.homelab.facts, every host's as config.homelab.hosts, so that
# anything derived from them (DNS records, scrape targets) is generated.
{ lib, ... }:
let
  factsType = lib.types.attrsOf lib.types.anything;
in
{
  options.homelab = {
    facts = lib.mkOption {
      type = factsType;
      description = ''
        This host's facts as hosts/facts.nix gives them (name, system, class,
        role, address, board, image, sshHostKey). Set by lib/mkSystem.nix; edit
        the facts file, never this option.
      '';
    };
    hosts = lib.mkOption {
      type = lib.types.attrsOf factsType;
      description = "Every host's facts, by host name. Set by lib/mkSystem.nix.";
    };
  };
}
