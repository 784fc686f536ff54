# labimg: builds SD images and installer ISOs, flashes and verifies them.
{ lib
, rustPlatform
, makeWrapper
, dosfstools
, e2fsprogs
, mtools
, util-linux
, zstd
}:
rustPlatform.buildRustPackage {
  pname = "labimg";
  inherit ((lib.importTOML ../../Cargo.toml).workspace.package) version;

  src = import ../workspace-src.nix { inherit lib; };
  # The workspace's own lock file: no vendor hash to keep in sync.
  cargoLock.lockFile = ../../Cargo.lock;

  cargoBuildFlags = [ "-p" "image-builder" ];
  # Unit tests only: the end-to-end tests boot QEMU and need loop devices.
  cargoTestFlags = [ "-p" "image-builder" "--lib" "--bins" ];

  nativeBuildInputs = [ makeWrapper ];
  nativeCheckInputs = [ dosfstools e2fsprogs mtools util-linux ];

  # mkfs.ext4 -d for the root file system, sfdisk/fsck for checks, zstd for
  # compressed images.
  postFixup = ''
    wrapProgram $out/bin/labimg \
      --suffix PATH : ${lib.makeBinPath [ dosfstools e2fsprogs mtools util-linux zstd ]}
  '';

  meta = {
    description = "Raspberry Pi SD images, installer ISOs, flashing and verifying for the home lab";
    license = lib.licenses.mit;
    mainProgram = "labimg";
    platforms = lib.platforms.linux;
  };
}
