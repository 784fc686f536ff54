# Host facts: the one source of truth the flake and the tools (labimg, labprov)
# share. Pure data built with builtins only, so plain
#   nix eval --json -f hosts/facts.nix
# reads it in milliseconds without nixpkgs or the network.
#
# Every directory under hosts/ that holds a facts.nix is a host; the rest
# (_modules, ...) is not. Tool-written files beside a host's facts are picked up
# here so the tools never edit Nix code:
#   ssh_host_ed25519_key.pub   the host's public SSH key (labprov keys new / enrol)
#   age.pub                    its age recipient, derived from that key (ssh-to-age)
#   nix-cache.pub              public key of the binary cache it serves, if any
#                              (`nix-store --generate-binary-cache-key`)
# and, lab-wide, hosts/recovery-age.pub: the public half of the offline recovery
# key (`labprov keys recovery new`), an admin-level recipient of every secret.
let
  lab = import ./lab.nix;
  entries = builtins.readDir ./.;
  isHost = name:
    entries.${name} == "directory" && builtins.pathExists (./. + "/${name}/facts.nix");
  optionalFile = path:
    if builtins.pathExists path then builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile path) else null;
  hostFacts = name:
    let dir = ./. + "/${name}"; in
    { inherit (lab) timeZone; } // import (dir + "/facts.nix") // {
      inherit name;
      sshHostKey = optionalFile (dir + "/ssh_host_ed25519_key.pub");
      ageRecipient = optionalFile (dir + "/age.pub");
      cachePublicKey = optionalFile (dir + "/nix-cache.pub");
    };
in
{
  # The people who administer the lab: their SSH keys open the installers and
  # their age recipients can decrypt every secret.
  admins = import ./admins.nix;
  # The offline recovery key: with it alone every secret and every lab-held
  # host key can be recovered (docs/keys.md). Only its age recipient is here.
  recovery.ageRecipient = optionalFile ./recovery-age.pub;
  # Lab-wide facts (hosts/lab.nix); each host below already carries them
  # unless it overrides them.
  inherit lab;
  hosts = builtins.listToAttrs (map
    (name: {
      inherit name;
      value = hostFacts name;
    })
    (builtins.filter isHost (builtins.attrNames entries)));
}
