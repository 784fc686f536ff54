# zsh as the login shell everywhere; Home Manager configures it per user.
{ lib, ... }:
{
  programs.zsh.enable = lib.mkDefault true;
}
