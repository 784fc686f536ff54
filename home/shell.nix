# zsh with a prompt, history search, direnv and a few modern core tools.
{ config, lib, pkgs, ... }:
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

  programs.starship = {
    enable = true;
    settings.palette = "catppuccin_${config.homelab.theme.flavour}";
  };

  programs.direnv = {
    enable = true;
    nix-direnv.enable = true;
  };

  programs.fzf.enable = true;
  programs.bat = {
    enable = true;
    config.theme = "Catppuccin ${lib.toSentenceCase config.homelab.theme.flavour}";
  };

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
