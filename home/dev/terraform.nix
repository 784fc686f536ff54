# Terraform (unfree since 1.6; allowed in hosts/_modules/common/nix.nix).
{ pkgs, ... }:
{
  home.packages = [ pkgs.terraform ];
}
