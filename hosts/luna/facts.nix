# The home lab server: DNS, reverse proxies, containers, controllers, monitoring.
{
  system = "x86_64-linux";
  class = "nixos";
  role = "home lab server";
  address = "192.168.1.10";

  # The lab's build fleet (hosts/_modules/nixos/build-server.nix serves it,
  # hosts/_modules/common/build-fleet.nix makes every other host use it):
  # luna builds for these systems, aarch64 through binfmt emulation...
  builder = {
    systems = [ "x86_64-linux" "aarch64-linux" ];
    maxJobs = 4;
    speedFactor = 2;
    supportedFeatures = [ "nixos-test" "benchmark" "big-parallel" "kvm" ];
    # Who may build here (as the trusted nix-ssh user): the machines admins
    # deploy from. Not the Pi: an edge device must not be able to put paths
    # into the store the cache signs.
    clients = [ "rymac" "rydev" "nixos-bootstrap" ];
  };
  # ...and serves its store as a binary cache, signed with the key whose
  # public half is hosts/luna/nix-cache.pub (docs/nix.md, build fleet).
  cache = {
    port = 5000;
  };
  # Where its services' state is backed up (hosts/services.nix `backup`),
  # each repository by its own unit: a local one on luna's disk (fast
  # restores, no protection from losing the disk) and an off-site one whose
  # address and credentials are secrets (backup/remote-repository and
  # backup/remote-environment in hosts/luna/secrets.sops.yaml).
  # Each at its own time (systemd OnCalendar), the off-site one after the
  # local one is done on most nights: services stopped for a backup stay
  # stopped while any backup still reads them.
  backup.repositories = {
    local = { path = "/var/backup/restic"; schedule = "*-*-* 02:00:00"; };
    remote = { remote = true; schedule = "*-*-* 03:30:00"; };
  };
}
