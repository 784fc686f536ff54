# macOS preferences. nix-darwin writes per-user defaults for system.primaryUser,
# so that must be the admin who owns the Mac.
{ config, lib, ... }:
{
  system.primaryUser = config.homelab.user;

  system.defaults = {
    dock = {
      autohide = lib.mkDefault true;
      show-recents = lib.mkDefault false;
    };
    finder = {
      AppleShowAllExtensions = lib.mkDefault true;
      FXPreferredViewStyle = lib.mkDefault "Nlsv";
    };
    NSGlobalDomain = {
      AppleInterfaceStyle = lib.mkDefault "Dark";
      ApplePressAndHoldEnabled = lib.mkDefault false;
      InitialKeyRepeat = lib.mkDefault 15;
      KeyRepeat = lib.mkDefault 2;
    };
    trackpad.Clicking = lib.mkDefault true;
  };

  # Touch ID for sudo, kept across macOS updates (pam sudo_local).
  security.pam.services.sudo_local.touchIdAuth = lib.mkDefault true;
}
