# labprov: partitions, installs and enrols hosts; manages host keys and secrets.
{ lib
, rustPlatform
, makeWrapper
, nix
, openssh
, sops
}:
rustPlatform.buildRustPackage {
  pname = "labprov";
  inherit ((lib.importTOML ../../Cargo.toml).workspace.package) version;

  src = import ../workspace-src.nix { inherit lib; };
  # The workspace's own lock file: no vendor hash to keep in sync.
  cargoLock.lockFile = ../../Cargo.lock;

  cargoBuildFlags = [ "-p" "provisioner" ];
  # doCheck stays on, limited to the unit tests (--lib --bins): the tests
  # under provisioner/tests/ start sshd and use loop devices.
  cargoTestFlags = [ "-p" "provisioner" "--lib" "--bins" ];

  nativeBuildInputs = [ makeWrapper ];

  # ssh/scp to reach targets, sops for `secrets sync`, nix to read the host
  # facts and disk specs (`nix eval`). Suffixed: the user's own come first.
  postFixup = ''
    wrapProgram $out/bin/labprov \
      --suffix PATH : ${lib.makeBinPath [ nix openssh sops ]}
  '';

  meta = {
    description = "Provision home lab hosts: disks from disko specs, installs over SSH, host keys and secrets";
    license = lib.licenses.mit;
    mainProgram = "labprov";
    platforms = lib.platforms.unix;
  };
}
