# Builds every system of the lab: the one place that wires the flake inputs,
# Home Manager, sops-nix, disko and our overlays into a host. Hosts are not
# listed here: every directory under hosts/ with a facts.nix is one, and its
# `class` says whether it is NixOS or nix-darwin. `admins` is hosts/admins.nix
# for the real systems; the flake's checks pass a throwaway one
# (lib/test-admins.nix) so that every system evaluates in CI.
{ inputs, self, admins ? (import ../hosts/facts.nix).admins }:
let
  inherit (inputs.nixpkgs) lib;
  facts = import ../hosts/facts.nix;
  services = import ./services { inherit facts; };

  hostDir = name: ../hosts + "/${name}";

  # The only argument modules get besides the module system's own. The host
  # name comes from config.networking.hostName, the facts from config.homelab.
  specialArgs = { inherit inputs; };

  overlays = [ self.overlays.additions self.overlays.modifications ];

  # Ours and the upstream modules every host gets, whatever its class.
  hostModules = name: [
    ../hosts/_modules/common
    (hostDir name + "/configuration.nix")
    {
      networking.hostName = name;
      nixpkgs.hostPlatform = facts.hosts.${name}.system;
      nixpkgs.overlays = overlays;
      homelab.facts = facts.hosts.${name};
      homelab.hosts = facts.hosts;
      homelab.admins = admins;
      # The commit a host runs (`nixos-version --configuration-revision`,
      # `darwin-version --configuration-revision`): what `labprov status`
      # compares with main. Each commit is thus a new generation, however
      # small the change.
      system.configurationRevision = self.rev or self.dirtyRev or null;
    }
    # The host's part of the service registry (hosts/services.nix).
    (lib.optionalAttrs (facts.hosts.${name}.class == "nixos") {
      homelab.services = services.forHost name;
    })
    # sops-nix reads the host's secrets file only once `labprov secrets sync`
    # has written it; until then the host has no secrets and builds anyway.
    (
      let file = hostDir name + "/secrets.sops.yaml"; in
      lib.optionalAttrs (builtins.pathExists file) { sops.defaultSopsFile = file; }
    )
    # The admin's Home Manager environment, in the profile the host picks
    # (homelab.homeProfile: home/dev, home/admin, or none).
    ({ config, ... }: {
      home-manager = {
        useGlobalPkgs = true;
        useUserPackages = true;
        backupFileExtension = "before-home-manager";
        users = lib.optionalAttrs (config.homelab.homeProfile != "none") {
          ${config.homelab.user} = {
            imports = [ (../home + "/${config.homelab.homeProfile}") ];
            home.stateVersion = config.homelab.homeStateVersion;
          };
        };
      };
    })
  ];

  mkNixos = name: lib.nixosSystem {
    inherit specialArgs;
    modules = hostModules name ++ [
      inputs.home-manager.nixosModules.home-manager
      inputs.sops-nix.nixosModules.sops
      inputs.disko.nixosModules.disko
      ../hosts/_modules/nixos
    ];
  };

  mkDarwin = name: inputs.nix-darwin.lib.darwinSystem {
    inherit specialArgs;
    modules = hostModules name ++ [
      inputs.home-manager.darwinModules.home-manager
      inputs.sops-nix.darwinModules.sops
      ../hosts/_modules/darwin
    ];
  };

  # Installers and the Pi bootstrap image are not hosts: no facts, no secrets,
  # no Home Manager. They only know the admins' public keys, and refuse to
  # evaluate without one, as the hosts do.
  mkInstaller = system: module: lib.nixosSystem {
    inherit specialArgs;
    modules = [
      ../hosts/_modules/common/admins.nix
      ../hosts/_modules/common/login-guard.nix
      module
      {
        nixpkgs.hostPlatform = system;
        nixpkgs.overlays = overlays;
        homelab.admins = admins;
      }
    ];
  };

  hostsOf = class: lib.filterAttrs (_: host: host.class == class) facts.hosts;
in
{
  nixosConfigurations = lib.mapAttrs (name: _: mkNixos name) (hostsOf "nixos") // {
    installer-x86_64 = mkInstaller "x86_64-linux" ../installers/iso.nix;
    installer-aarch64 = mkInstaller "aarch64-linux" ../installers/iso.nix;
    nixpi-bootstrap = mkInstaller "aarch64-linux" ../installers/nixpi-bootstrap.nix;
  };

  darwinConfigurations = lib.mapAttrs (name: _: mkDarwin name) (hostsOf "darwin");
}
