# git with the admin's identity from hosts/admins.nix.
{ lib, osConfig, ... }:
let
  admin = osConfig.homelab.admins.${osConfig.homelab.user};
in
{
  programs.git = {
    enable = true;
    settings = {
      user = { name = admin.description; } // lib.optionalAttrs (admin.email != null) { inherit (admin) email; };
      init.defaultBranch = "main";
      pull.rebase = true;
      push.autoSetupRemote = true;
      rerere.enabled = true;
    };
    ignores = [ ".direnv" "result" "result-*" ];
  };

  programs.delta = {
    enable = true;
    enableGitIntegration = true;
  };
}
