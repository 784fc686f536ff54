# The admin profile: shell, git and an editor, in the lab's theme. Every host
# with a Home Manager environment gets at least this (homelab.homeProfile).
{
  imports = [
    ./git.nix
    ./neovim.nix
    ./shell.nix
    ./theme.nix
  ];
}
