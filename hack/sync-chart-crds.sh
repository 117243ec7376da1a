#!/usr/bin/env bash
# Copies the EdgeModel CRD (crds/, the single source of truth) into the Helm chart's crds/
# directory. A packaged chart cannot carry a symlink, so the chart holds a byte copy;
# tests/chart/test_chart.py fails when the two differ and names this script.
#
#   hack/sync-chart-crds.sh          # prints the files it copied
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/crds"
DST="$ROOT/charts/edgemodel-operator/crds"

mkdir -p "$DST"
# Drop copies whose source is gone, then copy every CRD file over.
for f in "$DST"/*.yaml; do
  [ -e "$f" ] || continue
  [ -e "$SRC/$(basename "$f")" ] || { rm -f "$f"; echo "removed charts/edgemodel-operator/crds/$(basename "$f")"; }
done
for f in "$SRC"/*.yaml; do
  cp "$f" "$DST/$(basename "$f")"
  echo "charts/edgemodel-operator/crds/$(basename "$f")"
done
