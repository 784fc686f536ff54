# labprov: partitions, installs and enrols hosts; manages host keys and secrets.
{ lib
, rustPlatform
, makeWrapper
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
  # Unit tests only: the end-to-end tests start sshd and use loop devices.
  cargoTestFlags = [ "-p" "provisioner" "--lib" "--bins" ];

  nativeBuildInputs = [ makeWrapper ];

  # ssh/scp to reach targets, sops for `secrets sync`.
  postFixup = ''
    wrapProgram $out/bin/labprov \
      --suffix PATH : ${lib.makeBinPath [ openssh sops ]}
  '';

  meta = {
    description = "Provision home lab hosts: disks from disko specs, installs over SSH, host keys and secrets";
    license = lib.licenses.mit;
    mainProgram = "labprov";
    platforms = lib.platforms.unix;
  };
}
