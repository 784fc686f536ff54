#!/usr/bin/env bash
# Test for kubectl-restarts with a stand-in kubectl that prints a fixed pod
# list. Usage: test.sh PATH-TO-kubectl-restarts (needs jq on PATH).
set -euo pipefail

plugin="${1:?usage: test.sh PATH-TO-kubectl-restarts}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="$here/kubectl-plugin-test-lib.sh"
[ -f "$lib" ] || lib="$here/../kubectl-plugin-test-lib.sh"
# shellcheck source=pkgs/kubectl-plugin-test-lib.sh
. "$lib"
export FIXTURE="$here/test-pods.json"

row() { printf '%s\t%s\t%s\t%s\t%s\n' "$@"; }

check "lists restarted containers, most restarts first, init containers too" \
  "$(row NAMESPACE POD CONTAINER RESTARTS LAST-REASON \
    default web-flappy web 7 OOMKilled \
    monitoring exporter init-config 3 - \
    default web-flappy sidecar 1 Error)" \
  "$("$plugin")"
check "asks for every namespace by default" "get pods --all-namespaces --output json" "$(cat "$fake/args")"

check "--min leaves out containers with fewer restarts" \
  "$(row NAMESPACE POD CONTAINER RESTARTS LAST-REASON default web-flappy web 7 OOMKilled)" \
  "$("$plugin" --min 5)"

"$plugin" -n monitoring > /dev/null
check "-n narrows to one namespace" "get pods --namespace monitoring --output json" "$(cat "$fake/args")"

check "says so when nothing restarted often enough" "no container restarted 100 times or more" "$("$plugin" --min 100)"

for bad in --bogus "--min" "--min x"; do
  # shellcheck disable=SC2086 # split on purpose: "--min x" is two arguments
  if "$plugin" $bad 2> /dev/null; then
    check "rejects $bad" "exit 2" "exit 0"
  else
    check "rejects $bad" "exit 2" "exit $?"
  fi
done

exit "$fail"
