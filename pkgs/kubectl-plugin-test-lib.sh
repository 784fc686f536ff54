# shellcheck shell=bash
# Sourced by every pkgs/kubectl-*/test.sh: a stand-in kubectl first on PATH
# that records its arguments in "$fake/args" and prints the file $FIXTURE
# names, and `check NAME EXPECTED ACTUAL`. The test ends with `exit "$fail"`.
# The Nix build and scripts/sandbox-check copy this file beside test.sh
# (check.nix: `shared`); from the repository it is found one level up.

fake="$(mktemp -d)"
trap 'rm -rf "$fake"' EXIT

# The stub's interpreter is the bash running this test: the Nix build sandbox
# has no /usr/bin/env, and patchShebangs never sees a file written at run time.
cat > "$fake/kubectl" << STUB
#!$BASH
echo "\$*" > "$fake/args"
cat "\${FIXTURE:?}"
STUB
chmod +x "$fake/kubectl"
export PATH="$fake:$PATH"

# shellcheck disable=SC2034 # read by the test that sources this file
fail=0
check() {
  local name="$1" expected="$2" actual="$3"
  if [ "$expected" = "$actual" ]; then
    echo "ok: $name"
  else
    echo "FAIL: $name"
    diff <(echo "$expected") <(echo "$actual") || true
    # shellcheck disable=SC2034 # read by the test that sources this file
    fail=1
  fi
}
