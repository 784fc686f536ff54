# Kubernetes tools, with our own kubectl plugins from pkgs/ (k9s takes the
# theme from home/admin/theme.nix).
{ pkgs, ... }:
{
  programs.k9s.enable = true;

  home.packages = with pkgs; [
    kubectl
    # Ours (pkgs/): `kubectl not-ready`, `kubectl restarts`, `kubectl images`.
    kubectl-images
    kubectl-not-ready
    kubectl-restarts
    kubernetes-helm
    kustomize
  ];
}
