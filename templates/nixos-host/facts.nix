# What this machine is. Pure data: the flake and the tools read it with plain
# `nix eval`. Put this directory at hosts/<name>/ and the flake picks it up.
{
  system = "x86_64-linux"; # or "aarch64-linux"
  class = "nixos";
  role = "what it is for";
  address = "192.168.1.50";
}
