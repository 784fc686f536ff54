# Kubernetes tools, with our own kubectl plugins from pkgs/ (k9s takes the
# theme from home/admin/theme.nix).
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
