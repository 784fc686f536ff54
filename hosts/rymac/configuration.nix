# rymac: the primary development machine (nix-darwin on Apple silicon).
{
  homelab.fonts.enable = true;
  homelab.homeProfile = "dev";
  homelab.homebrew = {
    enable = true;
    # rydev runs here.
    casks = [ "parallels" ];
  };

  homelab.homeStateVersion = "26.05";
  # nix-darwin counts its state versions as integers; 7 for new installs.
  system.stateVersion = 7;
}
