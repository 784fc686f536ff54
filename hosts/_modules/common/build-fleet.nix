# The client side of the lab's build fleet, on every host: each other host
# whose facts declare a `builder` is a remote builder (over SSH as nix-ssh,
# with this host's SSH host key, the builder's host key pinned from the
# facts), and each that declares a `cache` with a recorded public key is a
# trusted substituter (lib/build-fleet.nix derives both from the facts).
# Nothing is configured for a builder whose host key is not recorded yet.
# With Determinate Nix on the Mac (nix.enable = false) Nix's configuration is
# not ours to write, so this stays off there.
{ config, lib, ... }:
let
  fleet = (import ../../../lib/build-fleet.nix).client config.homelab.facts.name config.homelab.hosts;
in
{
  config = lib.mkIf config.nix.enable (lib.mkMerge [
    (lib.mkIf (fleet.buildMachines != [ ]) {
      nix.distributedBuilds = true;
      nix.buildMachines = fleet.buildMachines;
      # The builder answers with the key its facts record, or not at all.
      programs.ssh.knownHosts = fleet.knownHosts;
      # Builders fetch what they can from the caches instead of from here.
      nix.settings.builders-use-substitutes = true;
    })

    (lib.mkIf (fleet.substituters != [ ]) {
      nix.settings.extra-substituters = fleet.substituters;
      nix.settings.extra-trusted-public-keys = fleet.trustedPublicKeys;
    })
  ]);
}
