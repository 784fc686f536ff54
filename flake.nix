{
  description = "Home lab: NixOS, nix-darwin and Home Manager for every machine, plus the tools that bring a bare machine to first boot";

  inputs = {
    # Every NixOS host, the installers, the packages and the dev shells on Linux.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

    # The darwin host and darwin dev shells: nix-darwin 26.05 refuses a nixpkgs
    # of another release, and this is the branch Hydra tests on macOS.
    nixpkgs-darwin.url = "github:NixOS/nixpkgs/nixpkgs-26.05-darwin";

    # The user's environment, the same on macOS and Linux (as a system module).
    home-manager = {
      url = "github:nix-community/home-manager/release-26.05";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    # macOS system configuration for rymac.
    nix-darwin = {
      url = "github:nix-darwin/nix-darwin/nix-darwin-26.05";
      inputs.nixpkgs.follows = "nixpkgs-darwin";
    };

    # Decrypts each host's secrets at activation with its SSH host key.
    sops-nix = {
      url = "github:Mic92/sops-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    # Declarative disk layouts: the same hosts/<host>/disko.nix labprov reads.
    disko = {
      url = "github:nix-community/disko/latest";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    # Raspberry Pi 4 kernel, device tree and boot loader settings for nixpi.
    # Its flake has a nixpkgs input of its own (a nixos-unstable tarball):
    # followed, so the lock is complete and nothing else is fetched.
    nixos-hardware = {
      url = "github:NixOS/nixos-hardware";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, nixpkgs-darwin, ... }@inputs:
    let
      inherit (nixpkgs) lib;
      systems = import ./lib/mkSystem.nix { inherit inputs self; };
      # The same systems with a throwaway admin key (lib/test-admins.nix): the
      # real ones refuse to evaluate until hosts/admins.nix has a key
      # (lib/login-guard.nix), and CI checks every system before that.
      checkedSystems = import ./lib/mkSystem.nix {
        inherit inputs self;
        admins = import ./lib/test-admins.nix;
      };

      supportedSystems = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" ];
      forAllSystems = f: lib.genAttrs supportedSystems (system: f (pkgsFor system));
      pkgsFor = system: import (if lib.hasSuffix "-darwin" system then nixpkgs-darwin else nixpkgs) {
        inherit system;
        overlays = [ self.overlays.additions self.overlays.modifications ];
      };

      # Every system that builds on `system` (with the throwaway admin key), by
      # the name `checks` shows it under.
      toplevelsFor = system:
        lib.mapAttrs' (name: host: lib.nameValuePair "nixos-${name}" host.config.system.build.toplevel)
          (lib.filterAttrs (_: host: host.config.nixpkgs.hostPlatform.system == system) checkedSystems.nixosConfigurations)
        // lib.mapAttrs' (name: host: lib.nameValuePair "darwin-${name}" host.config.system.build.toplevel)
          (lib.filterAttrs (_: host: host.config.nixpkgs.hostPlatform.system == system) checkedSystems.darwinConfigurations)
        # luna as it runs once its secrets file holds the proxies' keys (a
        # fixture of key names, nothing that decrypts): Caddy, HAProxy and
        # their sops secrets and template are on, which the real, secret-less
        # clone never evaluates.
        // lib.optionalAttrs (system == checkedSystems.nixosConfigurations.luna.config.nixpkgs.hostPlatform.system) {
          nixos-luna-with-secrets = (checkedSystems.nixosConfigurations.luna.extendModules {
            modules = [{
              sops.defaultSopsFile = ./tests/services/fixtures/luna-secrets.sops.yaml;
              sops.validateSopsFiles = false;
            }];
          }).config.system.build.toplevel;
        };
    in
    {
      inherit (systems) nixosConfigurations darwinConfigurations;

      overlays = import ./overlays;

      # Only what builds on each system (labimg is Linux-only).
      packages = forAllSystems (pkgs:
        lib.filterAttrs (_: pkg: lib.meta.availableOn pkgs.stdenv.hostPlatform pkg) (import ./pkgs { inherit pkgs; }));

      devShells = forAllSystems (pkgs: {
        default = pkgs.callPackage ./pkgs/dev-shell.nix { };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);

      checks = forAllSystems (pkgs:
        toplevelsFor pkgs.stdenv.hostPlatform.system
        // lib.mapAttrs' (name: lib.nameValuePair "package-${name}") self.packages.${pkgs.stdenv.hostPlatform.system}
        // {
          # The shared crates' unit tests (no package runs them otherwise).
          lab-crates-tests = pkgs.callPackage ./pkgs/lab-crates-tests.nix { };

          # The same formatting rule scripts/check-nix enforces, inside the sandbox.
          format = pkgs.runCommand "check-format" { nativeBuildInputs = [ pkgs.nixpkgs-fmt ]; } ''
            cd ${self}
            nixpkgs-fmt --check .
            touch $out
          '';
        });

      templates = {
        nixos-host = {
          path = ./templates/nixos-host;
          description = "A new NixOS host: facts, configuration, disk spec, hardware";
        };
        darwin-host = {
          path = ./templates/darwin-host;
          description = "A new nix-darwin host: facts and configuration";
        };
      };
    };
}
