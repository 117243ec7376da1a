#!/usr/bin/env bash
# The main job: on the running local cluster, install the CRD, start the operator in the
# background, apply the samples in examples/ to the namespace edge-demo, and show them
# reconciled. Run through `make demo`, which starts the cluster first.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.devcluster
NS=${DEMO_NAMESPACE:-edge-demo}
PY=${PY:-.venv/bin/python}
source "$STATE/env"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Installing the EdgeModel CRD"
kubectl apply --server-side --force-conflicts -f crds/edgemodels.edgeai.dev.yaml
kubectl wait --for=condition=Established --timeout=60s crd/edgemodels.edgeai.dev >/dev/null

say "Starting the operator (log: $STATE/operator.log)"
if [ -f "$STATE/operator.pid" ] && kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$STATE/operator.pid"))"
else
  EDGEMODEL_NAMESPACES="$NS" EDGEMODEL_HEALTH_ADDRESS=127.0.0.1:16481 EDGEMODEL_RESYNC_SECONDS=5 \
    nohup "$PY" -m edgemodel_operator >>"$STATE/operator.log" 2>&1 &
  echo $! >"$STATE/operator.pid"
  for _ in $(seq 1 60); do
    curl -fsS http://127.0.0.1:16481/healthz >/dev/null 2>&1 && break
    kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null || { tail -20 "$STATE/operator.log"; exit 1; }
    sleep 0.5
  done
  echo "running (pid $(cat "$STATE/operator.pid"))"
fi

say "Applying the samples to namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
kubectl apply -n "$NS" -f examples/

say "Waiting for every EdgeModel to be Ready"
kubectl wait -n "$NS" --for=condition=Ready --timeout=120s edgemodels --all

say "kubectl get edgemodels -n $NS"
kubectl get edgemodels -n "$NS" -o wide
say "Workloads and where their pods run"
kubectl get deployments,daemonsets -n "$NS" -L edgeai.dev/accelerator
kubectl get pods -n "$NS" -o custom-columns='POD:.metadata.name,TARGET:.metadata.labels.edgeai\.dev/target,ACCELERATOR:.metadata.labels.edgeai\.dev/accelerator,NODE:.spec.nodeName,READY:.status.conditions[?(@.type=="Ready")].status'
say "Events"
kubectl get events -n "$NS" --field-selector involvedObject.kind=EdgeModel --sort-by=.lastTimestamp | tail -15

say "Waiting for digits-cpu to pass its health gates and become the stable revision"
for _ in $(seq 1 120); do
  stable=$(kubectl get em digits-cpu -n "$NS" -o jsonpath='{.status.stableRevision}')
  [ -n "$stable" ] && break
  sleep 1
done
echo "stable revision: ${stable:?digits-cpu was not promoted}"

say "Rolling out a deliberately broken version (examples/rollback/digits-cpu-broken.yaml)"
kubectl apply -n "$NS" -f examples/rollback/digits-cpu-broken.yaml
kubectl wait -n "$NS" --for=condition=RolledBack --timeout=120s em/digits-cpu
kubectl get em digits-cpu -n "$NS" -o wide
kubectl get em digits-cpu -n "$NS" \
  -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
kubectl get deployment digits-cpu-cpu -n "$NS" \
  -o jsonpath='serving image: {.spec.template.spec.containers[0].image}{"\n"}'

say "Making room: a Jetson's GPU is exclusive, and digits-fleet holds every one of them"
kubectl delete em digits-fleet -n "$NS" --wait=true --timeout=60s

say "Building real images: the digits model per accelerator, through podman's Docker API"
"$PY" hack/imagekit.py up
"$PY" hack/imagekit.py base            # a Debian bookworm base, made once (about 45 s)
for acc in cpu gpu npu; do "$PY" hack/imagekit.py wheels "$acc"; done
eval "$("$PY" hack/imagekit.py env)"   # DOCKER_HOST and EDGEMODEL_REGISTRY
MODELS="$STATE/models/digits"
[ -f "$MODELS/model.onnx" ] || "$PY" tests/models/make_digits.py "$MODELS"
running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
if ! running models; then  # the model store the EdgeModel's uri points at
  nohup "$PY" -m http.server 16482 --bind 127.0.0.1 --directory "$MODELS" \
    >>"$STATE/models.log" 2>&1 &
  echo $! >"$STATE/models.pid"
fi
if ! running builder; then  # an operator that builds images, for namespace edge-builds
  EDGEMODEL_NAMESPACES=edge-builds EDGEMODEL_HEALTH_ADDRESS=127.0.0.1:16483 \
    EDGEMODEL_RESYNC_SECONDS=5 EDGEMODEL_REGISTRY_URL="$EDGEMODEL_REGISTRY/demo" \
    EDGEMODEL_REGISTRY_INSECURE=true EDGEMODEL_BUILD_CONTEXT=images \
    EDGEMODEL_BASE_IMAGE=localhost/edgemodel-base:bookworm DOCKER_HOST="$DOCKER_HOST" \
    nohup "$PY" -m edgemodel_operator >>"$STATE/builder.log" 2>&1 &
  echo $! >"$STATE/builder.pid"
fi
kubectl create namespace edge-builds --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace edge-builds pod-security.kubernetes.io/enforce=restricted \
  --overwrite >/dev/null
SHA=$(sha256sum "$MODELS/model.onnx" | cut -d' ' -f1)
sed "s/@SHA256@/$SHA/" examples/built/digits-built.yaml.in | kubectl apply -n edge-builds -f -
echo "Building; follow it with: kubectl get em digits -n edge-builds -o wide -w"
kubectl wait -n edge-builds --for=condition=Ready --timeout=1200s em/digits
kubectl get em digits -n edge-builds -o wide
kubectl get em digits -n edge-builds -o jsonpath='{range .status.images[*]}{.variant}{"\t"}{.sizeBytes}{"\t"}{.image}{"\n"}{end}'

cat <<MSG

The cluster and the operator keep running. Try:
  source $STATE/env
  kubectl explain edgemodel.spec.targets
  kubectl describe edgemodel -n $NS digits-cpu
  kubectl get em digits -n edge-builds -o yaml        # status.images: digests and sizes
  kubectl apply -n $NS -f examples/cpu-replicas.yaml   # back to the good version
Stop everything with: make cluster-down
MSG
