# The admin's environment, the same on macOS and Linux (Home Manager as a
# NixOS / nix-darwin module, wired in lib/mkSystem.nix).
{
  imports = [
    ./git.nix
    ./kubernetes.nix
    ./neovim.nix
    ./shell.nix
    ./terraform.nix
    ./theme.nix
    ./toolchains.nix
    ./vscode.nix
  ];
}
