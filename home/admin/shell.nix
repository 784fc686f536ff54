# zsh with a prompt, history search and a few modern core tools: what an admin
# needs on any host.
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
  programs.fzf.enable = true;
  programs.bat.enable = true;

  home.packages = with pkgs; [
    fd
    jq
    ripgrep
  ];
}
