# kubectl-not-ready: a kubectl plugin listing pods that are not Ready, with why.
{ kubectlPlugin
, jq
, kubectl
}:
kubectlPlugin {
  pname = "kubectl-not-ready";
  src = ./.;
  description = "kubectl plugin: list the pods that are not Ready, with the reason";
  runtimeInputs = [ jq kubectl ];
}
