# The lab's login guard as a pure function (builtins only, so plain Nix and
# scripts/check-nix evaluate it without nixpkgs): given the admins of
# hosts/admins.nix, the reason a system built from them would let nobody log
# in, or null when at least one admin has an SSH key. Every NixOS host, the
# installers and the nixpi bootstrap image assert on it
# (hosts/_modules/common/login-guard.nix).
admins:
let
  keys = builtins.concatLists (map (admin: admin.sshKeys or [ ]) (builtins.attrValues admins));
in
if keys != [ ] then null
else
  "No admin has an SSH key in hosts/admins.nix, so this system would let nobody in "
  + "(password logins are off everywhere). Add your public key (`cat ~/.ssh/id_ed25519.pub`) "
    + "to sshKeys there, `git add hosts/admins.nix`, and evaluate again."
