#!/usr/bin/env bash
# Builds the pinned Helm 3 client from its Go module into a cache outside the checkout,
# keyed by version, for the chart tests and anyone who has no helm of their own. A second
# run finds the binary and returns at once.
#
#   hack/build-helm.sh          # prints the path of the helm binary
#   HELM_VERSION=v3.19.5 hack/build-helm.sh
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE_ROOT=${EDGEMODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemodel-operator}
OUT="$CACHE_ROOT/helm-$HELM_VERSION"

log() { echo "build-helm: $*" >&2; }

if [ ! -x "$OUT/helm" ]; then
  command -v go >/dev/null || { log "Go is required (https://go.dev) and was not found on PATH"; exit 1; }
  log "building Helm $HELM_VERSION (first run only; a minute or two)"
  # Build into a temporary directory and move it into place, so an interrupted build
  # never leaves a half-written binary that a later run would take for a finished one.
  mkdir -p "$CACHE_ROOT"
  tmp=$(mktemp -d "$CACHE_ROOT/helm-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # Like Helm's own Makefile: stamp the version, and the Kubernetes version that `helm lint`
  # and `helm template` assume (from the client-go that Helm is built with; without it
  # they assume v1.20 and reject charts with a newer kubeVersion).
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  client_go=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")  # v0.MINOR.PATCH
  k8s_minor=$(echo "$client_go" | cut -d. -f2)
  [ -n "$k8s_minor" ] || { log "cannot read the k8s.io/client-go version from $gomod"; exit 1; }
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$OUT" && mv "$tmp" "$OUT"
  trap - EXIT
fi

echo "$OUT/helm"
