#!/usr/bin/env bash
# The main job: on the running local cluster, publish the model-server images, serve the
# example models, run the operator, apply the samples in examples/ to the namespace
# edge-demo, call the model on the real node through its Service, roll out a version that
# crashes and watch it rolled back, show its metrics on a real Prometheus, and build
# per-model images without a daemon. Run
# through `make demo`, which starts the cluster first.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.devcluster
NS=${DEMO_NAMESPACE:-edge-demo}
BUILDS=edge-builds
PY=${PY:-.venv/bin/python}
STORE=10.244.0.1:16490  # the real node's bridge: its pods and this host both reach it
source "$STATE/env"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
start_operator() {  # name health-port env...
  local name=$1 port=$2; shift 2
  if running "$name"; then echo "$name already running (pid $(cat "$STATE/$name.pid"))"; return; fi
  env "$@" EDGEMODEL_HEALTH_ADDRESS="127.0.0.1:$port" EDGEMODEL_RESYNC_SECONDS=5 \
    nohup "$PY" -m edgemodel_operator >>"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  for _ in $(seq 1 60); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null || { tail -20 "$STATE/$name.log"; exit 1; }
    sleep 0.5
  done
  echo "$name running (pid $(cat "$STATE/$name.pid"), log $STATE/$name.log)"
}

kubectl get node real-cpu-0 >/dev/null 2>&1 || {
  echo "The demo serves on the real node real-cpu-0: start the cluster with REAL_NODES=1 (the default)."
  exit 1
}

say "Publishing the model-server images: make images (cpu for amd64 and arm64, gpu and npu for amd64)"
PY=$PY hack/images.sh 2>>"$STATE/images.log" | sed "s/^/  /"  # progress: $STATE/images.log
eval "$(python3 hack/imagekit.py env)"  # DOCKER_HOST, EDGEMODEL_REGISTRY
VERSION=$("$PY" -c 'import edgemodel_operator; print(edgemodel_operator.__version__)')
SERVERS="$EDGEMODEL_REGISTRY/edgemodel-server:$VERSION-{accelerator}"

say "Serving examples/models on http://$STORE (the model store the samples point at)"
if ! running models; then
  nohup "$PY" -m http.server "${STORE#*:}" --bind "${STORE%:*}" --directory examples/models \
    >>"$STATE/models.log" 2>&1 &
  echo $! >"$STATE/models.pid"
fi
for _ in $(seq 1 20); do curl -fsS "http://$STORE/digits/1.0.0/model.onnx" -o /dev/null && break; sleep 0.25; done

say "Starting Prometheus next to the cluster (make monitoring-up)"
"$PY" hack/monitoring.py up
eval "$(python3 hack/monitoring.py env)"  # EDGEMODEL_PROMETHEUS_URL
python3 hack/monitoring.py register demo-operator 127.0.0.1:16482

say "Installing the EdgeModel CRD and starting the operator"
kubectl apply --server-side --force-conflicts -f crds/edgemodels.edgeai.dev.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/edgemodels.edgeai.dev >/dev/null
start_operator operator 16481 EDGEMODEL_NAMESPACES="$NS" EDGEMODEL_SERVER_IMAGE="$SERVERS" \
  EDGEMODEL_ACTIVE_PROBE=true EDGEMODEL_PROMETHEUS_URL="$EDGEMODEL_PROMETHEUS_URL" \
  EDGEMODEL_METRICS_ADDRESS=127.0.0.1:16482

say "Applying the samples to namespace $NS"
for ns in "$NS" "$BUILDS"; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
done
kubectl apply -n "$NS" -f examples/

say "Waiting for every EdgeModel to be Ready"
kubectl wait -n "$NS" --for=condition=Ready --timeout=300s edgemodels --all
say "kubectl get edgemodels -n $NS -o wide"
kubectl get edgemodels -n "$NS" -o wide
say "Where the pods run (real-cpu-0 is a real node; edge-* are simulated)"
kubectl get pods -n "$NS" -o custom-columns='POD:.metadata.name,TARGET:.metadata.labels.edgeai\.dev/target,ACCELERATOR:.metadata.labels.edgeai\.dev/accelerator,NODE:.spec.nodeName,READY:.status.conditions[?(@.type=="Ready")].status'
say "Events"
kubectl get events -n "$NS" --field-selector involvedObject.kind=EdgeModel --sort-by=.lastTimestamp | tail -12

call() {  # ask digits-real, through its Service, which digit the first held-out image shows
  local ip
  ip=$(kubectl get svc digits-real-cpu -n "$NS" -o jsonpath='{.spec.clusterIP}')
  "$PY" - "$ip" <<'PY'
import sys
import numpy as np
import tritonclient.http as triton
with np.load("examples/models/digits/1.0.0/samples.npz") as data:
    image, label = data["X"][:1].astype(np.float32), int(data["y"][0])
client = triton.InferenceServerClient(f"{sys.argv[1]}:8080")
inputs = triton.InferInput("input", [1, 64], "FP32")
inputs.set_data_from_numpy(image, binary_data=True)
answer = client.infer("digits-real", [inputs])
meta = client.get_model_metadata("digits-real")
rows = ["".join(" .:-=+*#%@"[int(v) * 9 // 16] for v in image[0][r * 8:(r + 1) * 8]) for r in range(8)]
print("\n".join("    " + row for row in rows))
print(f"  The model (version {meta['versions'][0]}, on {meta['parameters']['execution_provider']}) "
      f"says {int(answer.as_numpy('label')[0])}; the image shows {label}.")
PY
}

say "Calling digits-real through its Service (a tritonclient on this host, the server on real-cpu-0)"
kubectl wait -n "$NS" --for=jsonpath='{.status.stableRevision}' --timeout=120s em/digits-real >/dev/null 2>&1 || true
call

say "The model server's metrics, and a dashboard-ready query on Prometheus"
pod_ip=$(kubectl get pods -n "$NS" -l edgeai.dev/edgemodel=digits-real -o jsonpath='{.items[0].status.podIP}')
curl -fsS "http://$pod_ip:8080/metrics" | grep -E '^edgemodel_(inference_requests_total|request_duration_seconds_count)' | head -3
sleep 4  # one scrape
QUERY='histogram_quantile(0.99, sum by (model, target, accelerator, arch, node_model, le) (rate(edgemodel_request_duration_seconds_bucket[5m])))'
echo "p99 latency by hardware cohort: $QUERY"
curl -fsS --get --data-urlencode "query=$QUERY" "$EDGEMODEL_PROMETHEUS_URL/api/v1/query" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    m = r["metric"]
    cohort = "/".join(m.get(k, "") for k in ("accelerator", "arch", "node_model"))
    print("  ", m.get("model"), "target", m.get("target"), cohort, "%.2f ms" % (float(r["value"][1]) * 1000))'
echo "Grafana dashboard: charts/edgemodel-operator/files/dashboard.json; Prometheus: $EDGEMODEL_PROMETHEUS_URL"

say "Rolling out a version whose model crashes the server (examples/rollback/digits-real-broken.yaml)"
kubectl apply -n "$NS" -f examples/rollback/digits-real-broken.yaml
kubectl wait -n "$NS" --for=condition=RolledBack --timeout=180s em/digits-real
kubectl get em digits-real -n "$NS" -o wide
kubectl get em digits-real -n "$NS" \
  -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
say "The stable version kept serving; calling it again"
call

say "Building per-model images without a daemon (a second operator, namespace $BUILDS)"
start_operator builder 16483 EDGEMODEL_NAMESPACES="$BUILDS" EDGEMODEL_SERVER_IMAGE="$SERVERS" \
  EDGEMODEL_BUILDER=registry EDGEMODEL_REGISTRY_URL="$EDGEMODEL_REGISTRY/demo" \
  EDGEMODEL_REGISTRY_INSECURE=true EDGEMODEL_ACTIVE_PROBE=true
kubectl apply -n "$BUILDS" -f examples/built/digits-built.yaml
echo "Building; follow it with: kubectl get em digits -n $BUILDS -o wide -w"
kubectl wait -n "$BUILDS" --for=condition=ImagesReady --timeout=1200s em/digits
kubectl wait -n "$BUILDS" --for=condition=Ready --timeout=300s em/digits
kubectl get em digits -n "$BUILDS" -o wide
kubectl get em digits -n "$BUILDS" -o jsonpath='{.status.conditions[?(@.type=="Degraded")].message}{"\n"}'
kubectl get em digits -n "$BUILDS" -o jsonpath='{range .status.images[*]}{.variant}{"  "}{.sizeBytes}{" B  "}{.image}{"\n"}{range .platforms[*]}{"    "}{.architecture}{": "}{.smokeTest}{"\n"}{end}{end}'

cat <<MSG

The cluster, the operators and the model store keep running. Try:
  source $STATE/env
  kubectl explain edgemodel.spec.targets
  kubectl describe edgemodel -n $NS digits-real
  kubectl get em digits -n $BUILDS -o yaml          # status.images: digests, sizes, smoke tests
  kubectl apply -n $NS -f examples/real-node.yaml    # back to the good version
Stop everything with: make cluster-down
MSG
