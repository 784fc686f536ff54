# The labimg STAND-IN system for the install tests (not NixOS): a
# NixOS-shaped toplevel, built by the real Nix without nixpkgs (plain
# derivations run by /bin/sh), that `labprov install` copies to a target
# and the stand-in nixos-install puts behind systemd-boot. It holds what
# NixOS's toplevel has for booting (kernel, initrd, kernel-params, init,
# nixos-version) plus the admins' authorized_keys, which NixOS puts in
# /etc/ssh/authorized_keys.d from users.users.root.openssh.authorizedKeys.
# The kernel and initrd are make.sh's (target/standin-iso/
# standin-system-x86_64: the stand-in installer's kernel, system-init.sh as
# /init), each a store path of its own as in NixOS. Its builders are the
# machine's /bin/sh and /usr/bin tools, so it builds where the Nix sandbox
# is off (scripts/setup configures this machine's Nix so), as
# tests/standin/nixos-system.nix does.
{ kernel
, initrd
  # The root filesystem's device, as the host's fileSystems."/" names it.
, root
, authorizedKeys
, host ? "standin"
}:
let
  mk = import ../standin/mk.nix;
  kernelPkg = mk "linux-standin" "mkdir -p $out; cp ${kernel} $out/bzImage";
  initrdPkg = mk "initrd-standin" "mkdir -p $out; cp ${initrd} $out/initrd";
in
mk "nixos-system-${host}-standin" ''
  mkdir -p $out
  printf '#!/bin/sh\necho "the labimg stand-in system runs from its initramfs"\n' > $out/init
  chmod 755 $out/init
  echo 26.05-standin > $out/nixos-version
  ln -s ${kernelPkg}/bzImage $out/kernel
  ln -s ${initrdPkg}/initrd $out/initrd
  echo 'console=ttyS0 root=${root}' > $out/kernel-params
  cat > $out/authorized_keys << 'KEYS'
  ${authorizedKeys}
  KEYS
''
