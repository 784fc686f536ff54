# Locale, console and time zone (from the host facts) for every NixOS host.
# Not in _modules/common:
# nix-darwin applies time.timeZone with `systemsetup -settimezone` on every
# activation, which would pin the Mac's clock to UTC; macOS keeps its own.
{ config, lib, ... }:
{
  i18n.defaultLocale = lib.mkDefault "en_US.UTF-8";
  console.keyMap = lib.mkDefault "us";
  # From the host facts: the host's own `timeZone`, else the lab's (hosts/lab.nix).
  time.timeZone = lib.mkDefault config.homelab.facts.timeZone;
}
