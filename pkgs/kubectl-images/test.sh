#!/usr/bin/env bash
# Test for kubectl-images with a stand-in kubectl that prints a fixed pod
# list. Usage: test.sh PATH-TO-kubectl-images (needs jq on PATH).
set -euo pipefail

plugin="${1:?usage: test.sh PATH-TO-kubectl-images}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="$here/kubectl-plugin-test-lib.sh"
[ -f "$lib" ] || lib="$here/../kubectl-plugin-test-lib.sh"
# shellcheck source=pkgs/kubectl-plugin-test-lib.sh
. "$lib"

check "counts each image once per pod, init containers too, most used first" \
  "$(printf '%s\t%s\n' IMAGE PODS busybox:1.36 2 nginx:1.27 2 prom/node-exporter:v1.8.2 1)" \
  "$(FIXTURE="$here/test-pods.json" "$plugin")"
check "asks for every namespace by default" "get pods --all-namespaces --output json" "$(cat "$fake/args")"

FIXTURE="$here/test-pods.json" "$plugin" -n default > /dev/null
check "-n narrows to one namespace" "get pods --namespace default --output json" "$(cat "$fake/args")"

echo '{"items": []}' > "$fake/empty.json"
check "says so when there are no pods" "no pods" "$(FIXTURE="$fake/empty.json" "$plugin")"

if "$plugin" --bogus 2> /dev/null; then
  check "rejects an unknown flag" "exit 2" "exit 0"
else
  check "rejects an unknown flag" "exit 2" "exit $?"
fi

exit "$fail"
