# Homebrew for the GUI apps nixpkgs does not package well on macOS. nix-darwin
# drives it; Homebrew itself is installed by hand once (docs/onboarding.md).
{ config, lib, ... }:
let
  cfg = config.homelab.homebrew;
in
{
  options.homelab.homebrew = {
    enable = lib.mkEnableOption "Homebrew casks managed by nix-darwin";
    casks = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "parallels" ];
      description = "Casks to install; anything not listed is removed on activation.";
    };
  };

  config = lib.mkIf cfg.enable {
    homebrew = {
      enable = true;
      inherit (cfg) casks;
      onActivation = {
        autoUpdate = false;
        upgrade = false;
        # The list above is the whole truth: uninstall what is not in it.
        cleanup = "zap";
      };
    };
  };
}
