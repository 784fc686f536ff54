# Neovim as the default editor, with the theme and Nix/Rust support.
{ config, pkgs, ... }:
{
  programs.neovim = {
    enable = true;
    defaultEditor = true;
    viAlias = true;
    vimAlias = true;
    plugins = with pkgs.vimPlugins; [
      catppuccin-nvim
      nvim-treesitter.withAllGrammars
      telescope-nvim
    ];
    # `initLua` since Home Manager 26.05 (`extraLuaConfig` is only an alias now).
    initLua = ''
      vim.opt.number = true
      vim.opt.relativenumber = true
      vim.opt.expandtab = true
      vim.opt.shiftwidth = 2
      vim.cmd.colorscheme("catppuccin-${config.homelab.theme.flavour}")
    '';
  };
}
