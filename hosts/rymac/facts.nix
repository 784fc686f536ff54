# The primary development machine (nix-darwin on Apple silicon).
{
  system = "aarch64-darwin";
  class = "darwin";
  role = "development workstation";
}
