# The Rust workspace's sources and nothing else, so that editing Nix files or
# docs does not rebuild labimg and labprov. Written with lib.cleanSourceWith
# rather than lib.fileset, which needs builtins.readFileType (Nix >= 2.14).
{ lib }:
let
  root = ../.;
  inherit (import ./rust-workspace.nix) sourceDirs sourceFiles;
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
