# A NixOS-shaped system toplevel for the tests, built by the real Nix without
# nixpkgs (plain derivations run by /bin/sh): what labimg's --system and
# labprov install read from a toplevel (init, kernel, initrd, dtbs,
# kernel-params, nixos-version), with the kernel and initrd as separate store
# paths so the closure is more than one path. A stand-in, not a NixOS system.
{ host ? "standin" }:
let
  mk = import ./mk.nix;
  kernel = mk "linux-standin" "mkdir -p $out/dtbs/broadcom; echo kernel > $out/Image; echo dtb > $out/dtbs/broadcom/bcm2711-rpi-4-b.dtb";
  initrd = mk "initrd-standin" "mkdir -p $out; echo initrd > $out/initrd";
in
mk "nixos-system-${host}-standin" ''
  mkdir -p $out
  printf '#!/bin/sh\n' > $out/init
  echo 26.05-standin > $out/nixos-version
  ln -s ${kernel}/Image $out/kernel
  ln -s ${initrd}/initrd $out/initrd
  ln -s ${kernel}/dtbs $out/dtbs
  echo 'console=ttyS0 loglevel=4' > $out/kernel-params
''
