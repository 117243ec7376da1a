#!/usr/bin/env bash
# Installs the Debian packages the local edge cluster and the tests need, once.
# Idempotent: packages already present are left alone and apt is not touched.
set -euo pipefail
PACKAGES=(openssl ca-certificates curl)
# GitOps (hack/gitops.py): git for the site repository and its git daemon.
PACKAGES+=(git)
# Container images without a Docker engine (hack/imagekit.py): podman serves the Docker
# Engine API, runc runs the containers, netavark + iptables give them a network with
# published ports, docker-registry is a local OCI registry, debootstrap makes the base.
PACKAGES+=(podman runc netavark iptables docker-registry debootstrap)
# arm64 images on x86 (hack/imagekit.py emulation, base --arch arm64): mmdebstrap makes the
# arm64 base; qemu itself comes from bookworm-backports (bookworm's 7.2 crashes on
# onnxruntime >= 1.28), downloaded into the cache, not installed.
PACKAGES+=(mmdebstrap arch-test)
# Real worker nodes (hack/realnode.py): containerd runs the pods, the CNI plugins give them
# a bridge network, kube-proxy needs conntrack and ipset, kubelet's checks use the rest;
# gcc builds the static pause binary of the sandbox image.
PACKAGES+=(containerd containernetworking-plugins conntrack ipset socat ethtool ebtables gcc libc6-dev)
# Monitoring (hack/monitoring.py): Debian's Prometheus and promtool. Our scripts run their
# own Prometheus on 127.0.0.1; the package's service is not used.
PACKAGES+=(prometheus)
# Data for the real edge models (tests/models): text rendered with these fonts for OCR,
# speech from espeak-ng for voice activity detection.
PACKAGES+=(fonts-dejavu-core fonts-liberation2 fonts-noto-mono espeak-ng)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
else
  sudo=
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the prometheus service on every address where systemd runs; the project
# runs its own on 127.0.0.1 only, so a service this script just installed is stopped.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null \
    && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
