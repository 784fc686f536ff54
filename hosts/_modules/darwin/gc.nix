# Keep the store small on the Mac too (launchd instead of systemd timers).
{ lib, ... }:
{
  nix.gc = {
    automatic = lib.mkDefault true;
    interval = lib.mkDefault { Weekday = 0; Hour = 3; Minute = 0; };
    options = lib.mkDefault "--delete-older-than 30d";
  };
  nix.optimise.automatic = lib.mkDefault true;
}
