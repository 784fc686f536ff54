# The home lab server: DNS, reverse proxies, containers, controllers, monitoring.
{
  system = "x86_64-linux";
  class = "nixos";
  role = "home lab server";
  address = "192.168.1.10";
}
