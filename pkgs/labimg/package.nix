# labimg: builds Raspberry Pi SD images, flashes and verifies them.
{ lib
, rustPlatform
, makeWrapper
, coreutils
, e2fsprogs
, nix
}:
rustPlatform.buildRustPackage {
  pname = "labimg";
  inherit ((lib.importTOML ../../Cargo.toml).workspace.package) version;

  src = import ../workspace-src.nix { inherit lib; };
  # The workspace's own lock file: no vendor hash to keep in sync.
  cargoLock.lockFile = ../../Cargo.lock;

  cargoBuildFlags = [ "-p" "image-builder" ];
  # doCheck stays on, limited to the unit tests (--lib --bins): they need no
  # external tool. The tests under image-builder/tests/ run mkfs, sfdisk,
  # fsck, bmaptool and QEMU and use loop devices, which the sandbox lacks.
  cargoTestFlags = [ "-p" "image-builder" "--lib" "--bins" ];

  nativeBuildInputs = [ makeWrapper ];

  # mkfs.ext4 -d and debugfs build the root filesystem; prefixed so that the
  # pinned e2fsprogs (and so the image's bytes) does not depend on the user's
  # PATH. nix (facts, system closures, nix-store --dump-db) and GNU cp (copies
  # the closure) are only fallbacks: a user's own nix, matching their daemon,
  # comes first.
  postFixup = ''
    wrapProgram $out/bin/labimg \
      --prefix PATH : ${lib.makeBinPath [ e2fsprogs ]} \
      --suffix PATH : ${lib.makeBinPath [ nix coreutils ]}
  '';

  meta = {
    description = "Raspberry Pi SD images for the home lab, and safe, verified flashing";
    license = lib.licenses.mit;
    mainProgram = "labimg";
    platforms = lib.platforms.linux;
  };
}
