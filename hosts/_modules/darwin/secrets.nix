# sops-nix on macOS decrypts with the Mac's SSH host key (Remote Login makes it).
{ lib, ... }:
{
  sops.age.sshKeyPaths = lib.mkDefault [ "/etc/ssh/ssh_host_ed25519_key" ];
}
