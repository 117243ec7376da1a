#!/usr/bin/env bash
# Builds the pinned Argo CD (one multi-call binary: argocd-application-controller,
# argocd-repo-server, argocd-server are links to it) from its Go module, and unpacks
# Debian's redis-server next to it, into a cache outside the checkout keyed by version.
# hack/gitops.py runs them as host processes. A second run finds them and returns at once.
#
#   hack/build-argocd.sh          # prints the cache directory (bin/ and redis/ inside)
set -euo pipefail

ARGOCD_VERSION=${ARGOCD_VERSION:-v3.6.1}
# Argo CD v3.6 declares go 1.27.0; the Go command fetches that toolchain when needed.
ARGOCD_GOTOOLCHAIN=${ARGOCD_GOTOOLCHAIN:-go1.27.0}
CACHE_ROOT=${EDGEMODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemodel-operator}
OUT="$CACHE_ROOT/argocd-$ARGOCD_VERSION"
REDIS_PACKAGES=(redis-server redis-tools libjemalloc2 liblzf1)
# Names the one binary answers to (it picks the component from the name it was run as).
COMPONENTS=(argocd-application-controller argocd-applicationset-controller argocd-repo-server
  argocd-server)

log() { echo "build-argocd: $*" >&2; }

complete() {
  for n in argocd git-verify-wrapper.sh "${COMPONENTS[@]}"; do [ -x "$OUT/bin/$n" ] || return 1; done
  [ -d "$OUT/crds" ] && [ -x "$OUT/redis/usr/bin/redis-server" ]
}
complete && { echo "$OUT"; exit 0; }

command -v go >/dev/null || { log "Go is required (https://go.dev) and was not found on PATH"; exit 1; }
command -v git >/dev/null || { log "git is required (Debian package git) and was not found"; exit 1; }
mkdir -p "$CACHE_ROOT"
# Everything is assembled in a temporary directory and moved into place at the end, so an
# interrupted run never leaves a half-built cache that a later run would take as finished.
tmp=$(mktemp -d "$CACHE_ROOT/argocd-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [ -d "$OUT" ]; then cp -a "$OUT/." "$tmp/"; fi
mkdir -p "$tmp/bin"
export GOTOOLCHAIN=$ARGOCD_GOTOOLCHAIN CGO_ENABLED=0 GOFLAGS=-mod=mod

gomod=$(go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
moddir=$(go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
[ -f "$gomod" ] && [ -d "$moddir" ] || { log "cannot download argo-cd $ARGOCD_VERSION"; exit 1; }

if [ ! -x "$tmp/bin/argocd" ]; then
  log "building Argo CD $ARGOCD_VERSION (first run only; about ten minutes on two cores)"
  src="$tmp/src"
  mkdir -p "$src"
  # go install refuses the module because its go.mod replaces gitops-engine with a local
  # directory; a wrapper module requires it and carries over every other replace (the
  # gitops-engine of the same version is published on its own).
  {
    printf 'module edgemodel.local/argocdbuild\n\ngo %s\n\n' "${ARGOCD_GOTOOLCHAIN#go}"
    printf 'require github.com/argoproj/argo-cd/v3 %s\n\n' "$ARGOCD_VERSION"
    awk '/^replace \(/{p=1} p && !/=> \.\//{print} p && /^\)/{p=0}
         /^replace [^(]/ && !/=> \.\//{print}' "$gomod"
  } > "$src/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/argoproj/argo-cd/v3/cmd"\n' \
    > "$src/tools.go"
  (cd "$src" && go mod tidy -e >/dev/null 2>&1) || true
  (cd "$src" && go build -trimpath \
    -ldflags "-s -w -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD_VERSION#v}" \
    -o "$tmp/bin/argocd.partial" github.com/argoproj/argo-cd/v3/cmd)
  mv "$tmp/bin/argocd.partial" "$tmp/bin/argocd"
  rm -rf "$src"
fi
for n in "${COMPONENTS[@]}"; do ln -sf argocd "$tmp/bin/$n"; done
# The repo server runs this wrapper around every git verification (v3.6 always does).
install -m 0755 "$moddir/hack/git-verify-wrapper.sh" "$tmp/bin/git-verify-wrapper.sh"
rm -rf "$tmp/crds" && mkdir -p "$tmp/crds"
for f in application-crd appproject-crd applicationset-crd; do
  install -m 0644 "$moddir/manifests/crds/$f.yaml" "$tmp/crds/$f.yaml"
done

if [ ! -x "$tmp/redis/usr/bin/redis-server" ]; then
  command -v apt-get >/dev/null || { log "apt-get is required to fetch Debian's redis-server"; exit 1; }
  log "fetching Debian's ${REDIS_PACKAGES[*]}"
  debs="$tmp/debs"
  mkdir -p "$debs"
  if ! (cd "$debs" && apt-get download "${REDIS_PACKAGES[@]}" >/dev/null 2>&1); then
    # Package lists may be missing on a fresh machine.
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
    (cd "$debs" && apt-get download "${REDIS_PACKAGES[@]}" >/dev/null) \
      || { log "apt-get download ${REDIS_PACKAGES[*]} failed"; exit 1; }
  fi
  rm -rf "$tmp/redis"
  for f in "$debs"/*.deb; do dpkg -x "$f" "$tmp/redis"; done
  rm -rf "$debs"
  [ -x "$tmp/redis/usr/bin/redis-server" ] || { log "no redis-server in the Debian packages"; exit 1; }
fi

chmod 0755 "$tmp"
rm -rf "$OUT" && mv "$tmp" "$OUT"
trap - EXIT
echo "$OUT"
