# Neovim as the default editor, in the lab's theme.
{ config, pkgs, ... }:
{
  programs.neovim = {
    enable = true;
    defaultEditor = true;
    viAlias = true;
    vimAlias = true;
    plugins = [ pkgs.vimPlugins.catppuccin-nvim ];
    # `initLua` since Home Manager 26.05 (`extraLuaConfig` is only an alias now).
    initLua = ''
      vim.opt.number = true
      vim.opt.expandtab = true
      vim.opt.shiftwidth = 2
      vim.cmd.colorscheme("catppuccin-${config.homelab.theme.flavour}")
    '';
  };
}
