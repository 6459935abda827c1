#!/usr/bin/env bash
# Renders the kustomize base and the dev overlay, failing on any error. Used by CI.
set -euo pipefail

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl not found; skipping manifest render"
  exit 0
fi

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
status=0
for target in . overlays/dev; do
  if kubectl kustomize "$dir/$target" >/dev/null; then
    echo "ok: kubectl kustomize infra/k8s/${target#.}"
  else
    echo "FAILED: kubectl kustomize infra/k8s/${target#.}" >&2
    status=1
  fi
done
exit "$status"
