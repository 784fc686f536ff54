# The client side of the lab's build fleet, on every host: each other host
# whose facts declare a `builder` is a remote builder (over SSH as nix-ssh,
# with this host's SSH host key, its own host key pinned from the facts), and
# each that declares a `cache` with a recorded public key is a trusted
# substituter. Nothing is configured for a builder whose host key is not
# recorded yet. With Determinate Nix on the Mac (nix.enable = false) Nix's
# own configuration is not ours to write, so this stays off there.
{ config, lib, ... }:
let
  others = lib.filterAttrs (name: _: name != config.homelab.facts.name) config.homelab.hosts;
  builders = lib.filterAttrs (_: host: host ? builder && host ? address && host.sshHostKey != null) others;
  caches = lib.filterAttrs (_: host: host ? cache && host ? address && host.cachePublicKey != null) others;
in
{
  config = lib.mkIf config.nix.enable (lib.mkMerge [
    (lib.mkIf (builders != { }) {
      nix.distributedBuilds = true;
      nix.buildMachines = lib.mapAttrsToList
        (_: host: {
          hostName = host.address;
          protocol = "ssh-ng";
          sshUser = "nix-ssh";
          sshKey = "/etc/ssh/ssh_host_ed25519_key";
          inherit (host.builder) systems maxJobs speedFactor supportedFeatures;
        })
        builders;
      # The builder answers with the key its facts record, or not at all.
      programs.ssh.knownHosts = lib.mapAttrs
        (name: host: {
          hostNames = [ host.address name "${name}.lab" ];
          publicKey = host.sshHostKey;
        })
        builders;
      # Builders fetch what they can from the caches instead of from here.
      nix.settings.builders-use-substitutes = true;
    })

    (lib.mkIf (caches != { }) {
      nix.settings.extra-substituters = lib.mapAttrsToList (_: host: "http://${host.address}:${toString host.cache.port}") caches;
      nix.settings.extra-trusted-public-keys = lib.mapAttrsToList (_: host: host.cachePublicKey) caches;
    })
  ]);
}
