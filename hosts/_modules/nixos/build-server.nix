# The serving side of the lab's build fleet, for a host whose facts declare
# it (luna): a remote builder for every other host (aarch64-linux through
# binfmt emulation where the host is x86_64), and a signed binary cache of
# its store. Clients are set up from the same facts by
# hosts/_modules/common/build-fleet.nix.
{ config, lib, ... }:
let
  facts = config.homelab.facts;
  others = lib.filterAttrs (name: _: name != facts.name) config.homelab.hosts;
  # Clients' nix-daemons log in with their SSH host keys (facts), admins
  # with their own keys (`nix build --builders ssh-ng://nix-ssh@luna ...`).
  clientKeys = lib.filter (key: key != null) (lib.mapAttrsToList (_: host: host.sshHostKey) others)
    ++ config.homelab.adminSshKeys;
  isBuilder = facts ? builder;
  servesCache = facts ? cache && facts.cachePublicKey != null;
  secretsFile = ../../${facts.name}/secrets.sops.yaml;
in
{
  config = lib.mkMerge [
    (lib.mkIf isBuilder {
      # Run the other platforms' builders under QEMU user emulation; the
      # binfmt module also adds them to nix.settings.extra-platforms.
      boot.binfmt.emulatedSystems = lib.filter (system: system != facts.system) facts.builder.systems;

      # Builds arrive over SSH as nix-ssh, speaking the daemon protocol. The
      # user must be trusted to build derivations sent to it.
      nix.sshServe = {
        enable = true;
        write = true;
        protocol = "ssh-ng";
        keys = clientKeys;
      };
      nix.settings.trusted-users = [ "nix-ssh" ];
    })

    (lib.mkIf servesCache {
      services.nix-serve = {
        enable = true;
        inherit (facts.cache) port;
        openFirewall = true;
        # nix-serve reads it as a systemd credential: root-owned is fine.
        secretKeyFile = config.sops.secrets.nix-cache-key.path;
      };
      sops.secrets.nix-cache-key = { };

      assertions = [
        {
          assertion = builtins.pathExists secretsFile;
          message = "hosts/${facts.name}/nix-cache.pub is recorded, so ${facts.name} serves a signed cache, but hosts/${facts.name}/secrets.sops.yaml does not exist: run `labprov secrets sync`, then `sops hosts/${facts.name}/secrets.sops.yaml` and add the private key as nix-cache-key (docs/nix.md, build fleet).";
        }
      ];
    })
  ];
}
