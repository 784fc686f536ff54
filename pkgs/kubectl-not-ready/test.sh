#!/usr/bin/env bash
# Test for kubectl-not-ready with a stand-in kubectl that prints a fixed pod
# list. Usage: test.sh PATH-TO-kubectl-not-ready (needs jq on PATH).
set -euo pipefail

plugin="${1:?usage: test.sh PATH-TO-kubectl-not-ready}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="$here/kubectl-plugin-test-lib.sh"
[ -f "$lib" ] || lib="$here/../kubectl-plugin-test-lib.sh"
# shellcheck source=pkgs/kubectl-plugin-test-lib.sh
. "$lib"

actual="$(FIXTURE="$here/test-pods.json" "$plugin")"
expected="$(printf '%s\t%s\t%s\t%s\n' \
  NAMESPACE NAME PHASE REASON \
  default web-crashing Running CrashLoopBackOff \
  monitoring exporter-pending Pending Unschedulable)"
check "lists only pods that are not ready, with the reason" "$expected" "$actual"
check "asks for every namespace by default" "get pods --all-namespaces --output json" "$(cat "$fake/args")"

FIXTURE="$here/test-pods.json" "$plugin" -n monitoring > /dev/null
check "-n narrows to one namespace" "get pods --namespace monitoring --output json" "$(cat "$fake/args")"

echo '{"items": []}' > "$fake/empty.json"
check "says so when every pod is ready" "all pods ready" "$(FIXTURE="$fake/empty.json" "$plugin")"

if "$plugin" --bogus 2> /dev/null; then
  check "rejects an unknown flag" "exit 2" "exit 0"
else
  check "rejects an unknown flag" "exit 2" "exit $?"
fi

exit "$fail"
