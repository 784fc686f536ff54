# Keep the store small on the Mac too (launchd instead of systemd timers).
# Only while nix-darwin manages Nix: with Determinate Nix (`nix.enable = false`)
# nix-darwin refuses these options, and Determinate collects garbage itself.
{ config, lib, ... }:
{
  config = lib.mkIf config.nix.enable {
    nix.gc = {
      automatic = lib.mkDefault true;
      interval = lib.mkDefault { Weekday = 0; Hour = 3; Minute = 0; };
      options = lib.mkDefault "--delete-older-than 30d";
    };
    nix.optimise.automatic = lib.mkDefault true;
  };
}
