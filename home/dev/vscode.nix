# VS Code with the same theme and the languages this lab is written in.
{ config, lib, pkgs, ... }:
{
  programs.vscode = {
    enable = true;
    profiles.default = {
      extensions = with pkgs.vscode-extensions; [
        catppuccin.catppuccin-vsc
        jnoortheen.nix-ide
        rust-lang.rust-analyzer
        ms-python.python
        golang.go
        hashicorp.terraform
      ];
      userSettings = {
        "workbench.colorTheme" = "Catppuccin ${lib.toSentenceCase config.homelab.theme.flavour}";
        "editor.fontFamily" = "'JetBrainsMono Nerd Font', monospace";
        "editor.formatOnSave" = true;
        "nix.enableLanguageServer" = true;
        "nix.serverPath" = "nil";
      };
    };
  };

  home.packages = [ pkgs.nil pkgs.nixpkgs-fmt ];
}
