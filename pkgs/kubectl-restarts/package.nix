# kubectl-restarts: a kubectl plugin listing restarted containers, most first.
{ kubectlPlugin
, jq
, kubectl
}:
kubectlPlugin {
  pname = "kubectl-restarts";
  src = ./.;
  description = "kubectl plugin: the containers that restarted, most restarts first, with why they last stopped";
  runtimeInputs = [ jq kubectl ];
}
