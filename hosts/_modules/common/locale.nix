# Time zone shared by every host; NixOS adds its locale in _modules/nixos.
{ lib, ... }:
{
  # TODO: the lab's time zone is not a host fact yet; UTC until it is.
  time.timeZone = lib.mkDefault "UTC";
}
