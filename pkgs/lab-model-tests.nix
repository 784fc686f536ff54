# lab-model's unit tests as a flake check: the shared library the tools stand
# on (host facts, keys, secrets rules, disko specs) had its tests run by cargo
# only, never by any Nix build. Builds nothing to install; the check is that
# `cargo test -p lab-model --lib` passes in the sandbox.
{ lib
, rustPlatform
}:
rustPlatform.buildRustPackage {
  pname = "lab-model-tests";
  inherit ((lib.importTOML ../Cargo.toml).workspace.package) version;

  src = import ./workspace-src.nix { inherit lib; };
  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [ "-p" "lab-model" ];
  cargoTestFlags = [ "-p" "lab-model" "--lib" ];

  # A library: nothing to install but the fact that the tests passed.
  installPhase = ''
    runHook preInstall
    mkdir -p $out
    touch $out/passed
    runHook postInstall
  '';
}
