# labprov: partitions disks from disko specs, installs and enrols hosts; manages host keys and secrets.
{ lib
, stdenv
, rustPlatform
, makeWrapper
, nix
, openssh
, sops
, util-linux
, e2fsprogs
, dosfstools
, btrfs-progs
, xfsprogs
}:
let
  # Which crates it builds and which of their tests its checkPhase runs; the
  # same facts drive scripts/sandbox-check.
  check = (import ../rust-workspace.nix).checks.labprov;
  crateFlags = lib.concatMap (crate: [ "-p" crate ]) check.crates;
in
rustPlatform.buildRustPackage {
  pname = "labprov";
  inherit ((lib.importTOML ../../Cargo.toml).workspace.package) version;

  src = import ../workspace-src.nix { inherit lib; };
  # The workspace's own lock file: no vendor hash to keep in sync.
  cargoLock.lockFile = ../../Cargo.lock;

  cargoBuildFlags = crateFlags;
  # doCheck stays on, limited to the unit tests: the tests under tests/ run
  # mkfs, sshd and QEMU and use loop devices, which the sandbox lacks.
  cargoTestFlags = crateFlags ++ check.targets;

  nativeBuildInputs = [ makeWrapper ];

  # ssh for installs and enrolment, sops for `secrets sync`, nix to read the
  # host facts and disk specs (`nix eval`) and to build and copy a system
  # (`install`); on Linux, what `labprov disk` runs after writing the
  # partition table itself: blkid, losetup, mount, mkswap and the mkfs of each
  # supported filesystem. Suffixed: the user's own come first.
  postFixup =
    let
      tools = [ nix openssh sops ]
        ++ lib.optionals stdenv.hostPlatform.isLinux [ util-linux e2fsprogs dosfstools btrfs-progs xfsprogs ];
    in
    ''
      wrapProgram $out/bin/labprov \
        --suffix PATH : ${lib.makeBinPath tools}
    '';

  meta = {
    description = "Provision home lab hosts: disks from disko specs, installs over pinned SSH, host keys, secrets and first-boot enrolment";
    license = lib.licenses.mit;
    mainProgram = "labprov";
    platforms = lib.platforms.unix;
  };
}
