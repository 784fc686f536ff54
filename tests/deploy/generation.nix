# A stand-in NixOS generation (tests/deploy): what labprov deploys and the
# host's stand-in switch-to-configuration activates. builtins only, built by
# the machine's /bin/sh like tests/standin/mk.nix (no nixpkgs here). Lives in
# the test lab (LAB/generation.nix), next to the files it takes:
#   generations/NAME/HOST/{etc/,daemons}  rendered by tests/deploy/run
#   standin/                              switch-to-configuration, nixos-version
#   standin-host.nix                      { system; standinBin; } of this run
# rev is the lab commit it is built from (nixos-version
# --configuration-revision, as system.configurationRevision gives it);
# slow: seconds its switch waits before starting its units; bootFails: its
# switch's `boot` fails (as a boot loader that cannot be written would).
{ host, name, rev, slow ? 0, bootFails ? false }:
let
  inherit (import ./standin-host.nix) system standinBin;
in
derivation {
  name = "nixos-system-${host}-standin-${name}";
  inherit system standinBin;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  files = ./generations + "/${name}/${host}";
  standin = ./standin;
  inherit rev slow;
  bootFails = if bootFails then "1" else "";
  args = [
    "-c"
    ''
      set -e
      mkdir -p $out/bin $out/sw/bin
      cp -R $files/etc $files/daemons $out/
      cp $standin/switch-to-configuration $out/bin/
      cp $standin/nixos-version $out/sw/bin/
      chmod 755 $out/bin/switch-to-configuration $out/sw/bin/nixos-version
      # sw/bin: the system's tools, as NixOS's /run/current-system/sw/bin
      # holds coreutils, util-linux, nix and systemd's tools; here the
      # machine's, with the stand-in systemctl and systemd-run.
      for tool in /usr/bin/* /usr/sbin/* /bin/* /sbin/*; do
        case ''${tool##*/} in systemctl | systemd-run) continue ;; esac
        [ -e "$out/sw/bin/''${tool##*/}" ] || ln -s "$tool" "$out/sw/bin/"
      done
      ln -s $standinBin/systemctl $standinBin/systemd-run $out/sw/bin/
      echo 26.05-standin > $out/nixos-version
      echo "$rev" > $out/configuration-revision
      echo "$slow" > $out/slow
      if [ -n "$bootFails" ]; then touch $out/boot-fails; fi
      printf '#!/bin/sh\necho "stand-in generation: nothing boots here" >&2\nexit 1\n' > $out/init
      chmod 755 $out/init
    ''
  ];
}
