# Builds one of our kubectl plugins (pkgs/kubectl-*/): a bash script installed
# as bin/kubectl-NAME with its runtime tools on PATH. Its install check is the
# check.nix beside it (tools and script as data), the same one
# scripts/sandbox-check runs here without /usr/bin.
{ lib
, stdenvNoCC
, makeWrapper
, buildPackages
}:
{ pname
, src
, description
, runtimeInputs
}:
let
  check = import (src + "/check.nix");
in
stdenvNoCC.mkDerivation {
  inherit pname src;
  version = "0.1.0";

  dontBuild = true;

  nativeBuildInputs = [ makeWrapper ];

  installPhase = ''
    runHook preInstall
    install -Dm755 ${pname} $out/bin/${pname}
    wrapProgram $out/bin/${pname} --prefix PATH : ${lib.makeBinPath runtimeInputs}
    runHook postInstall
  '';

  doInstallCheck = true;
  # Tools for the build platform: the check runs where the build runs.
  nativeInstallCheckInputs = map (name: buildPackages.${name}) (lib.attrNames check.inputs);
  installCheckPhase = ''
    runHook preInstallCheck
    ${lib.concatMapStrings (f: "cp ${./. + "/${f}"} ${f}\n") (check.shared or [ ])}
    ${check.script}
    # The check above tests the script before wrapping (a stand-in kubectl
    # must come first on PATH); this runs the installed wrapper itself, with
    # nothing inherited, so a broken wrapper or shebang fails the build.
    env -i $out/bin/${pname} --help > /dev/null
    runHook postInstallCheck
  '';

  meta = {
    inherit description;
    license = lib.licenses.mit;
    mainProgram = pname;
    platforms = lib.platforms.unix;
  };
}
