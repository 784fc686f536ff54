# Language toolchains for day-to-day work; projects pin their own in dev shells.
{ pkgs, ... }:
{
  programs.go.enable = true;

  home.packages = with pkgs; [
    nodejs
    python3
    uv
  ];
}
