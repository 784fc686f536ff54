# The lab's build fleet as pure functions of the host facts (builtins only, so
# plain Nix and scripts/check-nix evaluate them without nixpkgs). The modules
# hosts/_modules/common/build-fleet.nix (every host as a client) and
# hosts/_modules/nixos/build-server.nix (the builders and caches) only turn
# these into options.
let
  others = self: hosts: builtins.removeAttrs hosts [ self ];
  select = pred: set: builtins.filter pred (builtins.attrValues set);
  isBuilder = host: host ? builder && host ? address && host.sshHostKey != null;
  # A builder serves only the hosts its facts name (`builder.clients`): a
  # client logs in as the trusted nix-ssh user, which can import unsigned
  # paths that the cache then signs, so edge devices (the Pi) are left out.
  serves = self: host: builtins.elem self (host.builder.clients or [ ]);
  isCache = host: host ? cache && host ? address && host.cachePublicKey != null;
in
{
  # What host `self` uses: the other hosts that build (with a recorded host
  # key to pin) and the other hosts that serve a cache (with a recorded key).
  client = self: hosts:
    let
      builders = select (host: isBuilder host && serves self host) (others self hosts);
      caches = select isCache (others self hosts);
    in
    {
      buildMachines = map
        (host: {
          hostName = host.address;
          protocol = "ssh-ng";
          sshUser = "nix-ssh";
          # The client's nix-daemon logs in with its own SSH host key, which
          # the builder knows from the facts.
          sshKey = "/etc/ssh/ssh_host_ed25519_key";
          inherit (host.builder) systems maxJobs speedFactor;
          supportedFeatures = host.builder.supportedFeatures or [ ];
        })
        builders;
      knownHosts = builtins.listToAttrs (map
        (host: {
          inherit (host) name;
          value = {
            hostNames = [ host.address host.name "${host.name}.lab" ];
            publicKey = host.sshHostKey;
          };
        })
        builders);
      substituters = map (host: "http://${host.address}:${toString host.cache.port}") caches;
      trustedPublicKeys = map (host: host.cachePublicKey) caches;
    };

  # What host `self` serves, if its facts make it a builder or a cache.
  server = self: hosts: adminKeys:
    let
      host = hosts.${self};
    in
    {
      isBuilder = host ? builder;
      # The systems it builds other than its own run under binfmt emulation.
      emulatedSystems = builtins.filter (system: system != host.system) (host.builder.systems or [ ]);
      # The SSH host keys of the hosts it serves, and the admins' keys.
      clientKeys = builtins.filter (key: key != null)
        (map (other: other.sshHostKey) (select (other: builtins.elem other.name (host.builder.clients or [ ])) (others self hosts)))
      ++ adminKeys;
      servesCache = host ? cache && host.cachePublicKey != null;
      cachePort = host.cache.port or null;
    };
}
