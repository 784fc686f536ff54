# The install check of kubectl-not-ready, as plain data so that two runners
# share it: package.nix runs it in the Nix build sandbox, scripts/sandbox-check
# runs it here in a sandbox-like environment (no /usr/bin, no network, HOME
# /homeless-shelter, uid nobody) with exactly the tools declared below.
{
  # nixpkgs attributes the check needs beyond stdenv's own tools (package.nix
  # takes them as nativeInstallCheckInputs), each with the commands it provides.
  # Files of pkgs/ placed beside test.sh before the script runs.
  shared = [ "kubectl-plugin-test-lib.sh" ];

  inputs = {
    jq = [ "jq" ];
  };

  # Runs in a copy of this directory, as stdenv runs a phase (bash, errexit,
  # nounset, pipefail). test.sh puts a stand-in kubectl first on PATH; the
  # installed wrapper's --prefix would hide it, so the unwrapped script is tested.
  script = ''
    patchShebangs test.sh kubectl-not-ready
    bash test.sh ./kubectl-not-ready
  '';
}
