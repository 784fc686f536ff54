# Locale, console and time zone for every NixOS host. Not in _modules/common:
# nix-darwin applies time.timeZone with `systemsetup -settimezone` on every
# activation, which would pin the Mac's clock to UTC; macOS keeps its own.
{ lib, ... }:
{
  i18n.defaultLocale = lib.mkDefault "en_US.UTF-8";
  console.keyMap = lib.mkDefault "us";
  # TODO: the lab's time zone is not a host fact yet; UTC until it is.
  time.timeZone = lib.mkDefault "UTC";
}
