# Facts about the Rust workspace that both the Nix packages and
# scripts/sandbox-check read (plain data: `nix eval -f` needs no nixpkgs).
{
  # What a package's source holds (workspace-src.nix): the crates, plus
  # firmware/ for the pinned manifest that image-builder's unit tests read as
  # ../firmware/manifest.toml. No blobs there.
  sourceDirs = [
    "lab-cli"
    "lab-facts"
    "lab-keys"
    "lab-blockdev"
    "lab-disko"
    "lab-bmap"
    "lab-testkit"
    "image-builder"
    "provisioner"
    "firmware"
  ];
  sourceFiles = [ "Cargo.toml" "Cargo.lock" ];

  # Each Rust package's checkPhase: `cargo test -p CRATE... TARGETS`. Only
  # unit tests: the tests under CRATE/tests/ run mkfs, sfdisk, sshd and QEMU
  # and use loop devices, which the sandbox lacks.
  checks = {
    labimg = { crates = [ "image-builder" ]; targets = [ "--lib" "--bins" ]; };
    labprov = { crates = [ "provisioner" ]; targets = [ "--lib" "--bins" ]; };
    # The libraries both tools stand on, which no installed package tests.
    lab-crates-tests = {
      crates = [ "lab-cli" "lab-facts" "lab-keys" "lab-blockdev" "lab-disko" "lab-bmap" "lab-testkit" ];
      targets = [ "--lib" ];
    };
  };
}
