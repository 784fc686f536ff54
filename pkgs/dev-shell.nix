# Everything a contributor needs: Rust for the tools, the Nix linters and
# formatter CI runs, sops/age for secrets, go-task, and the image tools the
# tests read images back with.
{ lib
, stdenv
, mkShell
, age
, cargo
, clippy
, deadnix
, go-task
, jq
, nixpkgs-fmt
, rust-analyzer
, rustc
, rustfmt
, shellcheck
, sops
, ssh-to-age
, yamllint
, dosfstools
, e2fsprogs
, mtools
, qemu
, util-linux
, xorriso
}:
mkShell {
  packages = [
    age
    cargo
    clippy
    deadnix
    go-task
    jq
    nixpkgs-fmt
    rust-analyzer
    rustc
    rustfmt
    shellcheck
    sops
    ssh-to-age
    yamllint
  ] ++ lib.optionals stdenv.hostPlatform.isLinux [
    dosfstools
    e2fsprogs
    mtools
    qemu
    util-linux
    xorriso
  ];
}
