# Fonts for hosts with a screen: one monospace face for the terminal and editors.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab.fonts;
in
{
  options.homelab.fonts = {
    enable = lib.mkEnableOption "the lab's fonts (hosts with a screen)";
    packages = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ pkgs.nerd-fonts.jetbrains-mono ];
      defaultText = lib.literalExpression "[ pkgs.nerd-fonts.jetbrains-mono ]";
      description = "Font packages to install system-wide.";
    };
  };

  config = lib.mkIf cfg.enable {
    fonts.packages = cfg.packages;
  };
}
