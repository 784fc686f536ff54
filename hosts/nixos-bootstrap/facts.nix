# Minimal base system for new aarch64 machines.
{
  system = "aarch64-linux";
  class = "nixos";
  role = "bootstrap base";
  address = "192.168.1.30";
}
