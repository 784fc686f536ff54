# kubectl-not-ready: a kubectl plugin listing pods that are not Ready, with why.
{ lib
, stdenvNoCC
, makeWrapper
, jq
, kubectl
}:
stdenvNoCC.mkDerivation {
  pname = "kubectl-not-ready";
  version = "0.1.0";

  src = ./.;
  dontBuild = true;

  nativeBuildInputs = [ makeWrapper ];

  installPhase = ''
    runHook preInstall
    install -Dm755 kubectl-not-ready $out/bin/kubectl-not-ready
    wrapProgram $out/bin/kubectl-not-ready --prefix PATH : ${lib.makeBinPath [ jq kubectl ]}
    runHook postInstall
  '';

  # test.sh puts a stand-in kubectl first on PATH; the wrapper's --prefix
  # would hide it, so the test runs the unwrapped script.
  doInstallCheck = true;
  nativeInstallCheckInputs = [ jq ];
  installCheckPhase = ''
    runHook preInstallCheck
    patchShebangs test.sh kubectl-not-ready
    bash test.sh ./kubectl-not-ready
    runHook postInstallCheck
  '';

  meta = {
    description = "kubectl plugin: list the pods that are not Ready, with the reason";
    license = lib.licenses.mit;
    mainProgram = "kubectl-not-ready";
    platforms = lib.platforms.unix;
  };
}
