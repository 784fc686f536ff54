# One theme everywhere: Catppuccin (Mocha by default) in Neovim and VS Code.
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
