# sops-nix decrypts with the host's SSH key (pinned by labprov). The host's
# secrets file is wired in lib/mkSystem.nix, only once it exists.
{ lib, ... }:
{
  sops.age.sshKeyPaths = lib.mkDefault [ "/etc/ssh/ssh_host_ed25519_key" ];
}
