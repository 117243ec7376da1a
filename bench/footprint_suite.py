"""Suite `footprint`: N EdgeModels of 3 targets each, against the same workloads applied with
kubectl, each side alone on the benchmark's cluster and alternating which goes first.

Per N and side: seconds from `kubectl create` until every EdgeModel is Ready (operator) or
every Deployment is available (kubectl), hence EdgeModels per second; the operator's peak
RSS and CPU, its API requests until Ready and per minute idle (counted by a proxy), and the
change-to-status latency of a change that starts a rollout (a new model version: until the
status shows the new revision rolling out). Readiness is followed through watches, not
lists: a list of 1,000 EdgeModels every second was what made the API server time out."""

from __future__ import annotations

import copy
import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster_suites import cluster_for
from common import log, median, pct, ratio, rounded, wait_for
from kube import GROUP, PLURAL, VERSION, BenchCluster, CountingProxy, Operator, em_ready
from kubernetes import watch

FLEETS = {"tiny": "gpu=0,npu=30,cpu=4", "full": "gpu=0,npu=300,cpu=30"}
COUNTS = {
    "tiny": (10, 100),
    "full": tuple(int(x) for x in os.environ.get("FOOTPRINT_FULL", "100,1000").split(",")),
}
# Repeats of each full size, in order ("3,1": three at 100, one at 1,000); one value for all.
_REPEATS = [int(x) for x in os.environ.get("FOOTPRINT_REPEATS", "3").split(",")]


def repeats(size: str, index: int) -> int:
    if size == "tiny":
        return 1
    return _REPEATS[min(index, len(_REPEATS) - 1)]


RESYNC = 10  # the operator's default
GOALS = {"edgemodels_per_s": 20, "peak_rss_mib": 250, "within_baseline_x": 1.2}
MANAGED_BY = "app.kubernetes.io/managed-by"


def model(name: str, namespace: str, version: str = "1.0.0") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "file:///models/digits/1.0.0/model.onnx",
                      "sha256": "3b5d5c3712955042212316173ccf37be800d0a4bf2c6e8d1c0a7f3dd0c6b0f5e",
                      "version": version},
            "targets": [
                {"name": "cpu", "accelerator": "cpu", "replicas": 1},
                {"name": "cpu-int8", "accelerator": "cpu", "precision": "int8", "replicas": 1},
                {"name": "npu", "accelerator": "npu", "precision": "int8", "replicas": 1},
            ],
            "serving": {"probe": {"periodSeconds": 2, "failureThreshold": 2}},
        },
    }  # fmt: skip


class Readiness:
    """Which objects of a namespace are ready, kept current by a watch in a thread."""

    def __init__(self, list_fn: Callable[..., Any], namespace: str,
                 ready: Callable[[dict[str, Any]], bool]) -> None:  # fmt: skip
        self.ready: dict[str, bool] = {}
        self._stop = threading.Event()
        self._args = (list_fn, namespace, ready)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        list_fn, namespace, ready = self._args
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(list_fn, namespace, timeout_seconds=30,
                                      _request_timeout=60):  # fmt: skip
                    obj = event["object"]
                    obj = obj if isinstance(obj, dict) else obj.to_dict()
                    name = obj["metadata"]["name"]
                    if event["type"] == "DELETED":
                        self.ready.pop(name, None)
                    else:
                        self.ready[name] = ready(obj)
                    if self._stop.is_set():
                        break
            except Exception as err:  # a dropped watch is started again
                log(f"watch restarted: {type(err).__name__}: {err}")
                time.sleep(1)

    def count(self) -> int:
        return sum(1 for ok in list(self.ready.values()) if ok)

    def stop(self) -> None:
        self._stop.set()


def _deployment_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    want = spec.get("replicas", 1)
    return bool(
        (status.get("observed_generation") or status.get("observedGeneration") or 0)
        >= (obj["metadata"].get("generation") or 1)
        and (status.get("available_replicas") or status.get("availableReplicas") or 0) >= want
        and (status.get("updated_replicas") or status.get("updatedReplicas") or 0) >= want
    )


def raw_copy(obj: dict[str, Any]) -> dict[str, Any]:
    """A child the operator made, as if written by hand: no owner, no status, not ours."""
    meta = obj["metadata"]
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != MANAGED_BY}
    spec = copy.deepcopy(obj["spec"])
    for key in ("clusterIP", "clusterIPs"):
        spec.pop(key, None)
    if obj["kind"] == "Deployment":
        tmpl = spec["template"]["metadata"]
        tmpl["labels"] = {k: v for k, v in tmpl.get("labels", {}).items() if k != MANAGED_BY}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {"name": meta["name"], "labels": labels}, "spec": spec}  # fmt: skip


def _wait_no_pods(c: BenchCluster, ns: str, timeout: float) -> None:
    wait_for(lambda: not c.core.list_namespaced_pod(ns, limit=1).items, timeout=timeout,
             what=f"the pods in {ns} to be gone", every=2.0)  # fmt: skip


def _operator_side(
    c: BenchCluster, proxy: CountingProxy, kubeconfig: Path, work: Path, ns: str, count: int,
    size: str, r: dict[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    op = Operator(kubeconfig, work / f"operator-{ns}.log", RESYNC, namespaces=ns)
    op.start()
    watcher = Readiness(lambda namespace, **kw: c.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, **kw), ns, em_ready)  # fmt: skip
    try:
        items = [model(f"m{i:04d}", ns) for i in range(count)]
        start_requests = proxy.total()
        t0 = time.monotonic()
        c.kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": items}))  # fmt: skip
        wait_for(lambda: watcher.count() == count, timeout=300 + count, every=0.2,
                 what=f"{count} EdgeModels Ready")  # fmt: skip
        r["operator_all_ready_s"] = time.monotonic() - t0
        r["operator_requests_per_model_to_ready"] = (proxy.total() - start_requests) / count
        idle = 10 if size == "tiny" else 30
        before = proxy.total()
        time.sleep(idle)
        r["operator_requests_per_model_per_min_idle"] = (proxy.total() - before) / count * 60 / idle
        r["change_to_status_ms"] = _change_latency(c, ns, count, 20 if size == "tiny" else 40)
        r["operator_peak_rss_mib"] = op.peak_rss_mib()
        r["operator_cpu_s"] = op.cpu_seconds()
        made = []
        for kind in ("deployments", "services"):
            made += json.loads(c.kubectl("get", kind, "-n", ns, "-o", "json"))["items"]
        for m in made:
            m.setdefault("kind", "Deployment" if "template" in m["spec"] else "Service")
        # Not --wait: kubectl waits object by object and, for thousands, runs out of its
        # rate limiter's deadline; the pods going is what the next run needs.
        c.kubectl("delete", "edgemodels", "--all", "-n", ns, "--wait=false")
        _wait_no_pods(c, ns, 600)
    finally:
        watcher.stop()
        op.stop()
    return [raw_copy(m) for m in made]


def _change_latency(c: BenchCluster, ns: str, count: int, samples: int) -> list[float]:
    """A new model version on sampled EdgeModels: ms until the status shows its rollout."""
    latencies = []
    for name in random.Random(count).sample([f"m{i:04d}" for i in range(count)],
                                            min(samples, count)):  # fmt: skip
        patched = c.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, {"spec": {"model": {"version": "1.1.0"}}}
        )
        t1 = time.monotonic()
        gen = patched["metadata"]["generation"]

        def rolling(n: str = name, g: int = gen) -> bool:
            status = c.get_em(ns, n).get("status") or {}
            moving = (status.get("rollout") or {}).get("revision") == status.get("revision")
            return int(status.get("observedGeneration", 0)) >= g and moving

        wait_for(rolling, timeout=120, what=f"{name}'s rollout in its status", every=0.01)
        latencies.append((time.monotonic() - t1) * 1000.0)
    return latencies


def _raw_side(c: BenchCluster, raw: list[dict[str, Any]], ns: str, r: dict[str, Any]) -> None:
    deployments = sum(1 for o in raw if o["kind"] == "Deployment")
    watcher = Readiness(c.apps.list_namespaced_deployment, ns, _deployment_ready)
    try:
        t0 = time.monotonic()
        c.kubectl("create", "-n", ns, "-f", "-",
                  stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": raw}))  # fmt: skip
        wait_for(lambda: watcher.count() == deployments, timeout=300 + deployments, every=0.2,
                 what=f"{deployments} Deployments available")  # fmt: skip
        r["raw_all_ready_s"] = time.monotonic() - t0
    finally:
        watcher.stop()
    c.kubectl("delete", "deployments,services", "--all", "-n", ns, "--wait=false")
    _wait_no_pods(c, ns, 600)


def suite_footprint(size: str, work: Path) -> dict[str, Any]:
    fleet = FLEETS[size]
    c = cluster_for(fleet)
    proxy = CountingProxy(c.port_base + 43, c.tls())
    proxy.start()
    kubeconfig = proxy.kubeconfig(work / "proxy.kubeconfig")
    rows: list[dict[str, Any]] = []
    try:
        for index, count in enumerate(COUNTS[size]):
            runs: list[dict[str, Any]] = []
            raw: list[dict[str, Any]] = []
            for i in range(repeats(size, index)):
                ns = f"footprint-{count}-{i}"
                c.namespace(ns)
                r: dict[str, Any] = {"first": "raw" if i % 2 and raw else "operator"}
                if r["first"] == "raw":
                    _raw_side(c, raw, ns, r)
                    raw = _operator_side(c, proxy, kubeconfig, work, ns, count, size, r)
                else:
                    raw = _operator_side(c, proxy, kubeconfig, work, ns, count, size, r)
                    _raw_side(c, raw, ns, r)
                c.kubectl("delete", "namespace", ns, "--wait=false")
                log(
                    f"footprint {count} run {i}: op {r['operator_all_ready_s']:.1f}s, "
                    f"raw {r['raw_all_ready_s']:.1f}s, RSS {r['operator_peak_rss_mib']} MiB"
                )
                runs.append(r)
            rows.append(_row(count, runs))
    finally:
        proxy.stop()
    return {
        "fleet": fleet,
        "targets_per_model": "3 (cpu, cpu int8, npu int8; placement replicas, replicas 1)",
        "resync_seconds": RESYNC,
        "goals": GOALS,
        "baseline": "the operator's Deployments and Services, applied with kubectl create "
        "(owner and managed-by label removed) while no operator runs; ready = every "
        "Deployment available",
        "api_requests": "counted by a proxy between the operator and the apiserver",
        "rows": rows,
    }


def _row(count: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return rounded(median([r[key] for r in runs]), 2)

    changes = [ms for r in runs for ms in r["change_to_status_ms"]]
    op_s, raw_s = med("operator_all_ready_s"), med("raw_all_ready_s")
    row = {
        "edgemodels": count,
        "workloads": 3 * count,
        "repeats": len(runs),
        "operator_all_ready_s": op_s,
        "raw_all_ready_s": raw_s,
        "ratio": rounded(ratio(op_s, raw_s), 2),
        "edgemodels_per_s": rounded(count / op_s, 1),
        "raw_edgemodels_per_s": rounded(count / raw_s, 1),
        "change_to_status_ms_p50": rounded(pct(changes, 50), 1),
        "change_to_status_ms_p99": rounded(pct(changes, 99), 1),
        "change_samples": len(changes),
        "operator_peak_rss_mib": max(r["operator_peak_rss_mib"] for r in runs),
        "operator_cpu_s": med("operator_cpu_s"),
        "operator_requests_per_model_to_ready": med("operator_requests_per_model_to_ready"),
        "operator_requests_per_model_per_min_idle": med("operator_requests_per_model_per_min_idle"),
        "runs": [{k: v for k, v in r.items() if k != "change_to_status_ms"} for r in runs],
    }
    row["goals_reached"] = {
        "edgemodels_per_s": row["edgemodels_per_s"] >= GOALS["edgemodels_per_s"],
        "peak_rss_mib": row["operator_peak_rss_mib"] <= GOALS["peak_rss_mib"],
        "within_baseline_x": row["ratio"] <= GOALS["within_baseline_x"],
    }
    return row
