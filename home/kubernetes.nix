# Kubernetes tools, with our own kubectl plugins from pkgs/.
{ pkgs, ... }:
{
  programs.k9s.enable = true;

  home.packages = with pkgs; [
    kubectl
    kubectl-not-ready # pkgs/kubectl-not-ready
    kubernetes-helm
    kustomize
  ];
}
