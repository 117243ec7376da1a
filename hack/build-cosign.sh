#!/usr/bin/env bash
# Builds the pinned cosign from its Go module into a cache outside the checkout, keyed by
# version. The tests use it to prove that what the operator signs and attests verifies
# with the real cosign (keys only, no transparency log). A second run finds the binary and
# returns at once.
#
#   hack/build-cosign.sh          # prints the path of the cosign binary
#   COSIGN_VERSION=v2.6.5 hack/build-cosign.sh
set -euo pipefail

# v2: signatures and attestations under cosign's tag scheme (sha256-<hex>.sig / .att),
# which registries without the referrers API hold. v3 defaults to bundles + referrers.
COSIGN_VERSION=${COSIGN_VERSION:-v2.6.5}
CACHE_ROOT=${EDGEMODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemodel-operator}
OUT="$CACHE_ROOT/cosign-$COSIGN_VERSION"

log() { echo "build-cosign: $*" >&2; }

if [ ! -x "$OUT/cosign" ]; then
  command -v go >/dev/null || { log "Go is required (https://go.dev) and was not found on PATH"; exit 1; }
  log "building cosign $COSIGN_VERSION (first run only; about 6 min on two cores)"
  # Build into a temporary directory and move it into place: an interrupted build never
  # leaves a half-written binary that a later run would take for a finished one.
  mkdir -p "$CACHE_ROOT"
  tmp=$(mktemp -d "$CACHE_ROOT/cosign-build.XXXXXX") && chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  ldflags="-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION"
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false" \
    go install -trimpath -ldflags "$ldflags" "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
  "$tmp/cosign" version >/dev/null
  rm -rf "$OUT" && mv "$tmp" "$OUT"
  trap - EXIT
fi

echo "$OUT/cosign"
