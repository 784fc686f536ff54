# The Rust workspace's sources and nothing else, so that editing Nix files or
# docs does not rebuild labimg and labprov. Written with lib.cleanSourceWith
# rather than lib.fileset, which needs builtins.readFileType (Nix >= 2.14).
{ lib }:
let
  root = ../.;
  # The crates, plus firmware/: no blobs there, only the pinned manifest that
  # image-builder's unit tests read as ../firmware/manifest.toml.
  sourceDirs = [
    "lab-cli"
    "lab-facts"
    "lab-keys"
    "lab-blockdev"
    "lab-disko"
    "lab-testkit"
    "image-builder"
    "provisioner"
    "firmware"
  ];
  sourceFiles = [ "Cargo.toml" "Cargo.lock" ];
in
lib.cleanSourceWith {
  name = "homelab-workspace";
  src = root;
  filter = path: _type:
    let
      rel = lib.removePrefix (toString root + "/") (toString path);
      top = lib.head (lib.splitString "/" rel);
    in
    lib.elem rel sourceFiles || lib.elem top sourceDirs;
}
