# The serving side of the lab's build fleet, for a host whose facts declare
# it (luna): a remote builder for every other host (other platforms through
# binfmt emulation), and a signed binary cache of its store once the cache's
# public key is recorded. lib/build-fleet.nix derives all of it from the
# facts; hosts/_modules/common/build-fleet.nix sets up the clients.
{ config, lib, ... }:
let
  name = config.homelab.facts.name;
  fleet = (import ../../../lib/build-fleet.nix).server name config.homelab.hosts config.homelab.adminSshKeys;
  secretsFile = ../../${name}/secrets.sops.yaml;
in
{
  config = lib.mkMerge [
    (lib.mkIf fleet.isBuilder {
      # The binfmt module also adds these to nix.settings.extra-platforms.
      boot.binfmt.emulatedSystems = fleet.emulatedSystems;

      # Builds arrive over SSH as nix-ssh, speaking the daemon protocol; it
      # must be trusted to build the derivations sent to it.
      nix.sshServe = {
        enable = true;
        write = true;
        protocol = "ssh-ng";
        keys = fleet.clientKeys;
      };
      nix.settings.trusted-users = [ "nix-ssh" ];
    })

    (lib.mkIf fleet.servesCache {
      services.nix-serve = {
        enable = true;
        port = fleet.cachePort;
        openFirewall = true;
        # nix-serve reads it as a systemd credential: root-owned is fine.
        secretKeyFile = config.sops.secrets.nix-cache-key.path;
      };
      sops.secrets.nix-cache-key = { };

      assertions = [
        {
          assertion = builtins.pathExists secretsFile;
          message = "hosts/${name}/nix-cache.pub is recorded, so ${name} serves a signed cache, but hosts/${name}/secrets.sops.yaml does not exist: run `labprov secrets sync`, then `sops hosts/${name}/secrets.sops.yaml` and add the private key as nix-cache-key (docs/nix.md, build fleet).";
        }
      ];
    })
  ];
}
