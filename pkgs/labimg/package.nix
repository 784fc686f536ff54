# labimg: builds Raspberry Pi SD images, flashes and verifies them.
{ lib
, rustPlatform
, makeWrapper
, coreutils
, curl
, e2fsprogs
, nix
}:
let
  # Which crates it builds and which of their tests its checkPhase runs; the
  # same facts drive scripts/sandbox-check.
  check = (import ../rust-workspace.nix).checks.labimg;
  crateFlags = lib.concatMap (crate: [ "-p" crate ]) check.crates;
in
rustPlatform.buildRustPackage {
  pname = "labimg";
  inherit ((lib.importTOML ../../Cargo.toml).workspace.package) version;

  src = import ../workspace-src.nix { inherit lib; };
  # The workspace's own lock file: no vendor hash to keep in sync.
  cargoLock.lockFile = ../../Cargo.lock;

  cargoBuildFlags = crateFlags;
  # doCheck stays on, limited to the unit tests: the tests under tests/ run
  # mkfs, sshd and QEMU and use loop devices, which the sandbox lacks.
  cargoTestFlags = crateFlags ++ check.targets;

  nativeBuildInputs = [ makeWrapper ];

  # mkfs.ext4 -d and debugfs build the root filesystem; prefixed so that the
  # pinned e2fsprogs (and so the image's bytes) does not depend on the user's
  # PATH. nix (facts, system closures, nix-store --dump-db) and GNU cp (copies
  # the closure) are only fallbacks: a user's own nix, matching their daemon,
  # comes first. curl fetches the pinned firmware (`labimg firmware fetch`);
  # the user's own, with their proxy and CA settings, also comes first.
  postFixup = ''
    wrapProgram $out/bin/labimg \
      --prefix PATH : ${lib.makeBinPath [ e2fsprogs ]} \
      --suffix PATH : ${lib.makeBinPath [ nix coreutils curl ]}
  '';

  meta = {
    description = "Raspberry Pi SD images for the home lab, and safe, verified flashing";
    license = lib.licenses.mit;
    mainProgram = "labimg";
    platforms = lib.platforms.linux;
  };
}
