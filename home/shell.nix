# zsh with a prompt, history search, direnv and a few modern core tools.
{ pkgs, ... }:
{
  programs.zsh = {
    enable = true;
    autosuggestion.enable = true;
    syntaxHighlighting.enable = true;
    history = {
      size = 50000;
      ignoreDups = true;
      share = true;
    };
  };

  programs.starship.enable = true;

  programs.direnv = {
    enable = true;
    nix-direnv.enable = true;
  };

  programs.fzf.enable = true;
  programs.bat.enable = true;

  home.packages = with pkgs; [
    age
    fd
    jq
    ripgrep
    sops
    ssh-to-age
    yq-go
  ];
}
