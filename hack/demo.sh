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
  EDGEMODEL_HEALTH_ADDRESS=127.0.0.1:16481 EDGEMODEL_RESYNC_SECONDS=5 \
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

cat <<MSG

The cluster and the operator keep running. Try:
  source $STATE/env
  kubectl explain edgemodel.spec.targets
  kubectl describe edgemodel -n $NS digits-fleet
  kubectl apply -n $NS -f examples/cpu-replicas.yaml   # back to the good version
Stop everything with: make cluster-down
MSG
