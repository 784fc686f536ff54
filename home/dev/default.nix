# The development profile (rymac, rydev): the admin profile plus editors,
# language toolchains, Kubernetes and infrastructure tools.
{
  imports = [
    ../admin
    ./kubernetes.nix
    ./neovim.nix
    ./shell.nix
    ./terraform.nix
    ./toolchains.nix
    ./vscode.nix
  ];
}
