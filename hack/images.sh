#!/usr/bin/env bash
# `make images`: build, smoke-test and publish the model-server images, one multi-arch index
# per accelerator, into REGISTRY (default: the local registry of the image kit). Locally
# the bases are Debian bookworm images made here (no public registry is reachable), arm64
# runs under qemu. Content-addressed: what the registry already has is not rebuilt.
#
#   REGISTRY=127.0.0.1:16500 ACCELERATORS=cpu,gpu,npu PLATFORMS=amd64,arm64 hack/images.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ACCELERATORS=${ACCELERATORS:-cpu,gpu,npu}
PLATFORMS=${PLATFORMS:-amd64,arm64}

python3 hack/imagekit.py up
eval "$(python3 hack/imagekit.py env)"   # DOCKER_HOST, EDGEMODEL_REGISTRY
REGISTRY=${REGISTRY:-$EDGEMODEL_REGISTRY}
bases=()
for arch in ${PLATFORMS//,/ }; do
  [ "$arch" = arm64 ] && python3 hack/imagekit.py emulation
  python3 hack/imagekit.py base --arch "$arch"
  name=localhost/edgemodel-base:bookworm; [ "$arch" = amd64 ] || name="$name-$arch"
  bases+=("$arch=$name")
done
insecure=()
case "$REGISTRY" in 127.0.0.1:*|localhost:*|localhost/*|127.0.0.1/*) insecure=(--insecure) ;; esac
base_list=$(IFS=,; echo "${bases[*]}")
exec "$PY" -m edgemodel_operator.servers --registry "$REGISTRY" "${insecure[@]}" \
  --accelerators "$ACCELERATORS" --platforms "$PLATFORMS" --base "$base_list" ${IMAGES_OUT:+--out "$IMAGES_OUT"}
