#!/usr/bin/env bash
# Builds the local cluster's binaries from Go modules at pinned versions into a cache
# outside the checkout, keyed by version: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, and kubelet and kube-proxy for the real worker nodes
# (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3) and kwok. A second run finds them
# and returns at once; a binary added to the list later is built on its own.
#
#   hack/build-tools.sh          # prints "<k8s dir>:<kwok dir>:<etcd dir>"
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
ETCD_VERSION=${ETCD_VERSION:-v3.6.5}
CACHE_ROOT=${EDGEMODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemodel-operator}
OUT="$CACHE_ROOT/k8s-$K8S_VERSION"
KWOK_OUT="$CACHE_ROOT/kwok-$KWOK_VERSION"
ETCD_OUT="$CACHE_ROOT/etcd-$ETCD_VERSION"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

log() { echo "build-tools: $*" >&2; }

command -v go >/dev/null || { log "Go is required (https://go.dev) and was not found on PATH"; exit 1; }

missing=()
for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done

if [ ${#missing[@]} -gt 0 ]; then
  log "building ${missing[*]} of Kubernetes $K8S_VERSION (first run only; minutes on two cores)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  # go install refuses k8s.io/kubernetes because its go.mod points the staging modules at
  # ./staging/src; a wrapper module that requires it and replaces each staging module
  # with its published v0.Y.Z twin builds the real commands.
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging_version="v0.${K8S_VERSION#v1.}"
  {
    echo "module edgemodel.local/k8sbuild"
    echo
    echo "go $(awk '/^go /{print $2; exit}' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    awk '/=> \.\/staging\/src\//{print $1}' "$gomod" | sort -u | while read -r m; do
      echo "	$m => $m $staging_version"
    done
    echo ")"
  } > go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${missing[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
  } > tools.go
  GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
  GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$OUT"
  for b in "${missing[@]}"; do
    log "go build $b"
    # Each binary is written beside its final name and renamed: an interrupted build never
    # leaves a half-written binary that a later run would take for a finished one.
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w $ldflags" -o "$OUT/.$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$OUT/.$b.tmp" "$OUT/$b"
  done
  cd / && rm -rf "$work" && trap - EXIT
fi

if [ ! -x "$KWOK_OUT/kwok" ]; then
  log "building kwok $KWOK_VERSION"
  mkdir -p "$KWOK_OUT"
  GOBIN="$KWOK_OUT" CGO_ENABLED=0 go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
# kwok's default pod stages, which the cluster concatenates with the project's own.
stage_dir="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
if [ ! -d "$KWOK_OUT/stage" ]; then
  [ -d "$stage_dir" ] || GOFLAGS=-mod=mod go mod download "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null
  cp -r "$stage_dir" "$KWOK_OUT/stage" && chmod -R u+w "$KWOK_OUT/stage"
fi

# etcd: Debian's 3.4.23 cannot report watch progress, which client-go >= 0.36 (kwok)
# needs for its streaming lists, so build a current one the same way as Kubernetes.
if [ ! -x "$ETCD_OUT/etcd" ]; then
  log "building etcd $ETCD_VERSION"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  printf 'module edgemodel.local/etcdbuild\n\ngo 1.24\n' > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
  GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
  mkdir -p "$ETCD_OUT"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$ETCD_OUT/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$ETCD_OUT/etcd.tmp" "$ETCD_OUT/etcd"
  cd / && rm -rf "$work" && trap - EXIT
fi

echo "$OUT:$KWOK_OUT:$ETCD_OUT"
