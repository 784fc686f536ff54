# Neovim on the development machines: every tree-sitter grammar and a fuzzy
# finder on top of the admin profile's editor (home/admin/neovim.nix).
{ pkgs, ... }:
{
  programs.neovim = {
    plugins = with pkgs.vimPlugins; [
      nvim-treesitter.withAllGrammars
      telescope-nvim
    ];
    initLua = ''
      vim.opt.relativenumber = true
    '';
  };
}
