# The shared crates' unit tests as a flake check: the libraries both tools
# stand on (the CLI layer, host facts, keys and secrets rules, block devices,
# disko specs, block maps, test support) have no package of their own whose build would
# run them. Builds nothing to install; the check is that their
# `cargo test --lib` passes in the sandbox.
{ lib
, rustPlatform
}:
let
  # The same facts drive scripts/sandbox-check.
  check = (import ./rust-workspace.nix).checks.lab-crates-tests;
  crateFlags = lib.concatMap (crate: [ "-p" crate ]) check.crates;
in
rustPlatform.buildRustPackage {
  pname = "lab-crates-tests";
  inherit ((lib.importTOML ../Cargo.toml).workspace.package) version;

  src = import ./workspace-src.nix { inherit lib; };
  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = crateFlags;
  cargoTestFlags = crateFlags ++ check.targets;

  # A library: nothing to install but the fact that the tests passed.
  installPhase = ''
    runHook preInstall
    mkdir -p $out
    touch $out/passed
    runHook postInstall
  '';
}
