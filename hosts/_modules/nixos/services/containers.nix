# The registry's containers (docs/services.md): Podman, each container from
# its pinned image on a network of its own, made before it starts.
{ config, lib, ... }:
let
  cfg = config.homelab.services;
  containers = cfg.settings.containers or { };
  podman = "${config.virtualisation.podman.package}/bin/podman";
in
{
  config = lib.mkIf (containers != { }) {
    homelab.containers.enable = true;
    virtualisation.oci-containers.containers = containers;
    # oci-containers has no option for a network: one oneshot unit each.
    systemd.services = lib.mapAttrs'
      (name: container: lib.nameValuePair "podman-network-${name}" {
        description = "Podman network for the ${name} container";
        wantedBy = [ "podman-${name}.service" ];
        before = [ "podman-${name}.service" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script = lib.concatMapStrings (net: "${podman} network exists ${net} || ${podman} network create ${net}\n") container.networks;
      })
      containers;
  };
}
