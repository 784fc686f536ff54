# The install check of kubectl-restarts, as plain data shared by package.nix (the
# Nix build sandbox) and scripts/sandbox-check (a sandbox-like environment
# here): the tools it needs beyond stdenv, and the script.
{
  # nixpkgs attributes the check needs beyond stdenv's own tools (package.nix
  # takes them as nativeInstallCheckInputs), each with the commands it provides.
  # Files of pkgs/ placed beside test.sh before the script runs.
  shared = [ "kubectl-plugin-test-lib.sh" ];

  inputs = {
    jq = [ "jq" ];
  };

  # Runs in a copy of this directory; the unwrapped script is tested (the
  # installed wrapper's --prefix would hide test.sh's stand-in kubectl).
  script = ''
    patchShebangs test.sh kubectl-restarts
    bash test.sh ./kubectl-restarts
  '';
}
