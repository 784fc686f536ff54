# One theme everywhere: Catppuccin, in one flavour, for Neovim and VS Code
# (their own files read homelab.theme.flavour), the prompt (starship), fzf,
# bat and k9s (here). Colours come from palettes.nix; bat's and k9s' theme
# files from nixpkgs' catppuccin package.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab.theme;
  palette = (import ./palettes.nix).${cfg.flavour};
  Flavour = lib.toSentenceCase cfg.flavour;
  themes = pkgs.catppuccin.override {
    variant = cfg.flavour;
    themeList = [ "bat" "k9s" ];
  };
in
{
  options.homelab.theme = {
    flavour = lib.mkOption {
      type = lib.types.enum [ "latte" "mocha" ];
      default = "mocha";
      description = "Catppuccin flavour of every themed program: mocha (dark) or latte (light).";
    };
  };

  config = {
    # starship takes named colours from the palette: the Catppuccin names, and
    # the ANSI names its default modules use, mapped onto them.
    programs.starship.settings = {
      palette = "catppuccin_${cfg.flavour}";
      palettes."catppuccin_${cfg.flavour}" = palette // {
        inherit (palette) red green yellow blue;
        black = palette.surface1;
        purple = palette.mauve;
        cyan = palette.teal;
        white = palette.text;
      };
    };

    programs.fzf.colors = {
      bg = palette.base;
      "bg+" = palette.surface0;
      fg = palette.text;
      "fg+" = palette.text;
      hl = palette.red;
      "hl+" = palette.red;
      header = palette.red;
      info = palette.mauve;
      marker = palette.lavender;
      pointer = palette.rosewater;
      prompt = palette.mauve;
      spinner = palette.rosewater;
    };

    programs.bat = {
      themes.catppuccin = {
        src = "${themes}/bat";
        file = "Catppuccin ${Flavour}.tmTheme";
      };
      config.theme = "catppuccin";
    };

    # Only takes effect where k9s is enabled (the development profile).
    programs.k9s = {
      skins.catppuccin = "${themes}/k9s/catppuccin-${cfg.flavour}.yaml";
      settings.k9s.ui.skin = "catppuccin";
    };
  };
}
