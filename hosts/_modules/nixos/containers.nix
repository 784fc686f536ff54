# Podman for OCI containers (opt-in): rootless-capable, with a Docker-compatible CLI.
{ config, lib, ... }:
let
  cfg = config.homelab.containers;
in
{
  options.homelab.containers = {
    enable = lib.mkEnableOption "Podman and declarative OCI containers";
  };

  config = lib.mkIf cfg.enable {
    virtualisation.podman = {
      enable = true;
      dockerCompat = lib.mkDefault true;
      # Containers on the default network find each other by name.
      defaultNetwork.settings.dns_enabled = lib.mkDefault true;
      autoPrune.enable = lib.mkDefault true;
    };
    virtualisation.oci-containers.backend = "podman";
  };
}
