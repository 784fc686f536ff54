# Development and testing VM (Parallels, Apple silicon).
{
  system = "aarch64-linux";
  class = "nixos";
  role = "development VM";
  address = "192.168.1.20";
}
