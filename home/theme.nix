# One theme everywhere: Catppuccin Mocha in the terminal tools, Neovim and VS Code.
{ lib, ... }:
{
  options.homelab.theme = {
    flavour = lib.mkOption {
      type = lib.types.enum [ "latte" "frappe" "macchiato" "mocha" ];
      default = "mocha";
      description = "Catppuccin flavour used by every themed program.";
    };
  };
}
