# kubectl-images: a kubectl plugin listing the images pods run, with counts.
{ kubectlPlugin
, jq
, kubectl
}:
kubectlPlugin {
  pname = "kubectl-images";
  src = ./.;
  description = "kubectl plugin: every container image the pods run, with how many pods run it";
  runtimeInputs = [ jq kubectl ];
}
