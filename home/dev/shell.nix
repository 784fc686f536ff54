# The development machines' shell additions: per-project environments
# (direnv with nix-direnv) and the tools for the lab's secrets and data files.
{ pkgs, ... }:
{
  programs.direnv = {
    enable = true;
    nix-direnv.enable = true;
  };

  home.packages = with pkgs; [
    age
    sops
    ssh-to-age
    yq-go
  ];
}
