# <name>: one line on what this Mac is for.
{
  homelab.fonts.enable = true;
  # The full development environment (home/dev); servers keep "admin".
  homelab.homeProfile = "dev";

  homelab.homeStateVersion = "26.05";
  # nix-darwin counts its state versions as integers; 7 for new installs.
  system.stateVersion = 7;
}
