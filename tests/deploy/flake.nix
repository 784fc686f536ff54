{
  # The deploy test's lab flake (tests/deploy/run copies it to LAB/flake.nix):
  # a STAND-IN with no inputs, so labprov can build
  # LAB#nixosConfigurations.HOST.config.system.build.toplevel here. luna's is
  # stand-in generation B; nixpi's fails to build (scenario 4: nothing may be
  # activated anywhere when one host does not build).
  description = "tests/deploy stand-in lab";
  outputs = { self }:
    let
      generation = host: name: import ./generation.nix { inherit host name; rev = self.rev or "dirty"; };
    in
    {
      nixosConfigurations.luna.config.system.build.toplevel = generation "luna" "B";
      nixosConfigurations.nixpi.config.system.build.toplevel = derivation {
        name = "nixos-system-nixpi-standin-broken";
        inherit (import ./standin-host.nix) system;
        builder = "/bin/sh";
        args = [ "-c" "echo 'stand-in: this nixpi generation fails to build, on purpose' >&2; exit 1" ];
      };
    };
}
