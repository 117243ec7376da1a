"""Suites on a local cluster of the benchmark's own: `fleet` and `rollback` (and the
helpers `footprint` and `ota` share)."""

from __future__ import annotations

import atexit
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

from common import log, median, ratio, rounded, wait_for
from kube import GROUP, VERSION, BenchCluster, Operator, condition, em_ready

SHA = "3b5d5c3712955042212316173ccf37be800d0a4bf2c6e8d1c0a7f3dd0c6b0f5e"
MODEL_LABEL = "edgeai.dev/edgemodel"
MANAGED_BY = "app.kubernetes.io/managed-by"
ACCELERATORS = ("gpu", "npu", "cpu")
# Full size is the 1,500-node fleet of a large site; FLEET_FULL and FLEET_REPEATS override it
# (for example on a shared two-core machine).
FLEETS = {
    "tiny": "gpu=2,npu=2,cpu=4",
    "full": os.environ.get("FLEET_FULL", "gpu=300,npu=300,cpu=900"),
}
REPEATS = {"tiny": 1, "full": int(os.environ.get("FLEET_REPEATS", "3"))}
RESYNC = 10  # the operator's default
ROLLBACK_DEADLINES = {"tiny": (10,), "full": (10, 30)}
POLL = 0.25

_cluster: BenchCluster | None = None


def cluster_for(fleet: str) -> BenchCluster:
    """One benchmark cluster at a time; reused by suites that ask for the same fleet."""
    global _cluster
    if _cluster is not None and _cluster.fleet == fleet:
        return _cluster
    if _cluster is not None:
        _cluster.down()
    _cluster = BenchCluster(fleet)
    atexit.register(_cluster.down)
    log(f"starting a benchmark cluster with fleet {fleet} on port base {_cluster.port_base}")
    took = _cluster.up()
    log(f"benchmark cluster up in {took:.0f}s")
    return _cluster


def fleet_counts(fleet: str) -> dict[str, int]:
    return {k: int(v) for k, v in (p.split("=") for p in fleet.split(","))}


def image(acc: str, tag: str) -> str:
    return f"registry.local/digits-{acc}:{tag}"


def fleet_model(name: str, tag: str, deadline: int = 600) -> dict[str, Any]:
    precision = {"gpu": "fp16", "npu": "int8", "cpu": "fp32"}
    targets = [
        {"name": acc, "accelerator": acc, "precision": precision[acc], "placement": "perNode",
         "image": image(acc, tag)}
        for acc in ACCELERATORS
    ]  # fmt: skip
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "file:///models/digits/1.0.0/model.onnx", "sha256": SHA,
                      "version": "1.0.0"},
            "targets": targets,
            "serving": {"probe": {"periodSeconds": 2, "failureThreshold": 2}},
            "rollout": {"progressDeadlineSeconds": deadline},
        },
    }  # fmt: skip


# --- DaemonSet observation -------------------------------------------------------------


def daemonsets(c: BenchCluster, ns: str) -> list[Any]:
    return list(c.apps.list_namespaced_daemon_set(ns).items)


def ds_done(ds: Any, want_image: str | None = None) -> bool:
    """`kubectl rollout status`: every desired pod updated, Ready and available."""
    st = ds.status
    desired = st.desired_number_scheduled or 0
    img = ds.spec.template.spec.containers[0].image
    return bool(
        st.observed_generation == ds.metadata.generation
        and desired > 0
        and (st.updated_number_scheduled or 0) == desired
        and (st.number_ready or 0) == desired
        and (st.number_available or 0) == desired
        and (want_image is None or img == want_image)
    )


def all_done(items: list[Any], expected: int, tag: str | None) -> bool:
    if len(items) != len(ACCELERATORS):
        return False
    total = sum(d.status.desired_number_scheduled or 0 for d in items)
    want = {d.metadata.name: d.spec.template.spec.containers[0].image for d in items}
    return total == expected and all(
        ds_done(d, want[d.metadata.name] if tag is None else None)
        and (tag is None or want[d.metadata.name].endswith(":" + tag))
        for d in items
    )


def pods_on(c: BenchCluster, ns: str, tag: str) -> tuple[int, int]:
    """(pods running the tag and Ready, all pods) in the namespace."""
    good = total = 0
    for p in c.core.list_namespaced_pod(ns).items:
        total += 1
        ready = any(x.type == "Ready" and x.status == "True" for x in p.status.conditions or [])
        if ready and p.spec.containers[0].image.endswith(":" + tag):
            good += 1
    return good, total


def wait_no_pods(c: BenchCluster, ns: str, timeout: float) -> None:
    wait_for(
        lambda: not c.core.list_namespaced_pod(ns, limit=1).items,
        timeout=timeout,
        what=f"the pods in {ns} to be gone",
        every=1.0,
    )


def timed_rollout(
    c: BenchCluster, ns: str, expected: int, tag: str, em: str | None, timeout: float,
    pods_done: dict[str, float] | None = None,
) -> float:  # fmt: skip
    """Seconds from now until every DaemonSet in ns runs `tag` on all pods (and the
    EdgeModel `em`, when given, is Ready for its current generation). `pods_done["s"]`
    gets when the DaemonSets were done, whatever the EdgeModel said by then."""
    t0 = time.monotonic()

    def done() -> bool:
        if not all_done(daemonsets(c, ns), expected, tag):
            return False
        if pods_done is not None:
            pods_done.setdefault("s", time.monotonic() - t0)
        return em is None or em_ready(c.get_em(ns, em))

    wait_for(done, timeout=timeout, what=f"{ns} to run {tag} everywhere", every=POLL)
    return time.monotonic() - t0


def operator_update(c: BenchCluster, ns: str, expected: int, timeout: float,
                    pods_done: dict[str, float]) -> str:  # fmt: skip
    """Wait for the update to finish; a rollback by the operator ends it too (and is said).
    `pods_done["s"]` gets when the DaemonSets were done, whatever the EdgeModel said."""
    t0 = time.monotonic()

    def done() -> str | None:
        em = c.get_em(ns, "digits")
        if condition(em, "RolledBack") == "True":
            for cond in em["status"]["conditions"]:
                if cond["type"] == "Degraded":
                    return "rolled back by the operator: " + str(cond.get("message", ""))[:300]
            return "rolled back by the operator"
        if all_done(daemonsets(c, ns), expected, "1.1.0"):
            pods_done.setdefault("s", time.monotonic() - t0)
            return "updated" if em_ready(c.get_em(ns, "digits")) else None
        return None

    try:
        return wait_for(done, timeout=timeout, what="the update", every=POLL)
    except TimeoutError as err:
        return f"timeout: {err}"


def raw_copy(ds: dict[str, Any]) -> dict[str, Any]:
    """The operator-made DaemonSet as a hand-written one: no owner, no status, renamed."""
    meta = ds["metadata"]

    def relabel(labels: dict[str, str]) -> dict[str, str]:
        out = {k: v for k, v in labels.items() if k != MANAGED_BY}
        if MODEL_LABEL in out:
            out[MODEL_LABEL] = "raw-" + out[MODEL_LABEL]
        return out

    spec = copy.deepcopy(ds["spec"])
    spec["selector"]["matchLabels"] = relabel(spec["selector"]["matchLabels"])
    spec["template"]["metadata"]["labels"] = relabel(spec["template"]["metadata"]["labels"])
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "raw-" + meta["name"], "labels": relabel(meta.get("labels", {}))},
        "spec": spec,
    }


def raw_service(svc: dict[str, Any]) -> dict[str, Any]:
    """The operator-made Service as a hand-written one, selecting the raw DaemonSet's pods."""
    spec = {k: v for k, v in svc["spec"].items()
            if k in ("type", "ports", "internalTrafficPolicy", "selector")}  # fmt: skip
    spec["selector"] = {k: "raw-" + v if k == MODEL_LABEL else v
                        for k, v in spec["selector"].items()}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "raw-" + svc["metadata"]["name"]}, "spec": spec}  # fmt: skip


def with_tag(ds_list: list[dict[str, Any]], tag: str) -> dict[str, Any]:
    items = copy.deepcopy(ds_list)
    for ds in items:
        if ds["kind"] != "DaemonSet":
            continue
        container = ds["spec"]["template"]["spec"]["containers"][0]
        container["image"] = container["image"].rsplit(":", 1)[0] + ":" + tag
    return {"apiVersion": "v1", "kind": "List", "items": items}


def promoted(c: BenchCluster, ns: str, name: str) -> bool:
    """The revision the EdgeModel's current spec asks for is its stable one."""
    em = c.get_em(ns, name)
    status = em.get("status") or {}
    current = status.get("observedGeneration") == em["metadata"].get("generation")
    stable = status.get("stableRevision")
    return bool(current and stable and stable == status.get("revision"))


# --- fleet ---------------------------------------------------------------------------


def _operator_side(c: BenchCluster, op: Operator, ns: str, expected: int, timeout: float,
                   r: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Create and update through the operator; returns its DaemonSets and Services as
    hand-written ones (for the raw sides)."""
    op.start()
    r["operator_ready_s"] = op.start_s  # not counted below: from its start to its first lists
    try:
        t0 = time.monotonic()
        c.apply(ns, fleet_model("digits", "1.0.0"))
        pods: dict[str, float] = {}
        timed_rollout(c, ns, expected, "1.0.0", "digits", timeout, pods)
        r["operator_create_s"] = time.monotonic() - t0
        r["operator_create_pods_s"] = pods.get("s", 0.0)
        wait_for(lambda: promoted(c, ns, "digits"), timeout=timeout, what="promotion")
        t0 = time.monotonic()
        c.apply(ns, fleet_model("digits", "1.1.0"))
        pods = {}
        r["operator_update_outcome"] = operator_update(c, ns, expected, timeout, pods)
        r["operator_update_s"] = time.monotonic() - t0
        r["operator_update_pods_s"] = pods.get("s", 0.0)
        good, total = pods_on(c, ns, "1.1.0")
        r["operator_update_success"] = ratio(good, expected)
        r["operator_pods_after_update"] = total
        made = json.loads(c.kubectl("get", "daemonsets", "-n", ns, "-o", "json"))["items"]
        services = json.loads(c.kubectl("get", "services", "-n", ns, "-o", "json"))["items"]
        c.kubectl("delete", "edgemodel", "digits", "-n", ns, "--wait=true")
        wait_no_pods(c, ns, timeout)
    finally:
        r["operator_peak_rss_mib"] = op.peak_rss_mib()
        r["operator_cpu_s"] = op.cpu_seconds()
        op.stop()
    return [raw_copy(d) for d in made] + [raw_service(s) for s in services]


def _raw_side(c: BenchCluster, raw: list[dict[str, Any]], ns: str, expected: int,
              timeout: float, r: dict[str, Any], services: bool = False) -> None:  # fmt: skip
    """The same DaemonSets applied with kubectl, the operator not running; with `services`,
    its Services too (what the operator makes, an EndpointSlice per 100 pods each)."""
    side = "rawsvc" if services else "raw"
    raw = [o for o in raw if o["kind"] == "DaemonSet" or services]
    t0 = time.monotonic()
    c.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(with_tag(raw, "1.0.0")))
    timed_rollout(c, ns, expected, "1.0.0", None, timeout)
    r[f"{side}_create_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    c.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(with_tag(raw, "1.1.0")))
    timed_rollout(c, ns, expected, "1.1.0", None, timeout)
    r[f"{side}_update_s"] = time.monotonic() - t0
    good, total = pods_on(c, ns, "1.1.0")
    r[f"{side}_update_success"] = ratio(good, expected)
    r[f"{side}_pods_after_update"] = total
    c.kubectl("delete", "daemonsets,services", "--all", "-n", ns, "--wait=true")
    wait_no_pods(c, ns, timeout)


def suite_fleet(size: str, work: Path) -> dict[str, Any]:
    """The operator and the same DaemonSets by hand, alone and with the operator's
    Services, each side alone on the cluster (the operator is stopped while the raw sides
    run), alternating whether the operator goes first or last."""
    fleet = FLEETS[size]
    expected = sum(fleet_counts(fleet).values())
    c = cluster_for(fleet)
    timeout = 120 + expected * 0.4
    runs: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    for i in range(REPEATS[size]):
        ns = f"fleet-{i}"
        c.namespace(ns)
        r: dict[str, Any] = {"first": "operator" if i % 2 == 0 or not raw else "raw"}
        op = Operator(c.kubeconfig, work / f"operator-{i}.log", resync_seconds=RESYNC)
        if r["first"] == "raw":
            _raw_side(c, raw, ns, expected, timeout, r)
            _raw_side(c, raw, ns, expected, timeout, r, services=True)
            raw = _operator_side(c, op, ns, expected, timeout, r)
        else:
            raw = _operator_side(c, op, ns, expected, timeout, r)
            _raw_side(c, raw, ns, expected, timeout, r, services=True)
            _raw_side(c, raw, ns, expected, timeout, r)
        r = {k: rounded(v, 2) if isinstance(v, float) else v for k, v in r.items()}
        log(f"fleet run {i}: {r}")
        runs.append(r)

    def med(key: str) -> float:
        return rounded(median([r[key] for r in runs]), 2)

    return {
        "fleet": fleet,
        "nodes": expected,
        "pods_per_version": expected,
        "repeats": len(runs),
        "resync_seconds": RESYNC,
        "rollout": "maxUnavailable 25% (the operator's default) on every side; each side "
        "alone on the cluster, alternating which goes first; two kubectl baselines: the "
        "operator's DaemonSets alone, and its DaemonSets and Services (the same objects)",
        "median": {
            "operator_create_s": med("operator_create_s"),
            "raw_create_s": med("raw_create_s"),
            "create_ratio": rounded(ratio(med("operator_create_s"), med("raw_create_s")), 2),
            # of which until the operator's DaemonSets were done (the rest: the status lagging)
            "operator_create_pods_s": med("operator_create_pods_s"),
            "operator_update_s": med("operator_update_s"),
            "raw_update_s": med("raw_update_s"),
            "update_ratio": rounded(ratio(med("operator_update_s"), med("raw_update_s")), 2),
            "operator_update_pods_s": med("operator_update_pods_s"),
            # The same DaemonSets and the operator's Services with kubectl: the same objects.
            "rawsvc_create_s": med("rawsvc_create_s"),
            "rawsvc_update_s": med("rawsvc_update_s"),
            "create_ratio_svc": rounded(ratio(med("operator_create_s"), med("rawsvc_create_s")), 2),
            "update_ratio_svc": rounded(ratio(med("operator_update_s"), med("rawsvc_update_s")), 2),
            "rawsvc_update_success": med("rawsvc_update_success"),
            "operator_update_success": med("operator_update_success"),
            "raw_update_success": med("raw_update_success"),
        },
        "operator_peak_rss_mib": max(r["operator_peak_rss_mib"] for r in runs),
        "operator_cpu_s": med("operator_cpu_s"),
        "runs": runs,
    }


# --- rollback ------------------------------------------------------------------------

FLAGGER = {
    "code_defaults": {
        "analysis_interval_s": 60,
        "threshold": 1,
        "progress_deadline_s": 600,
        "source": "fluxcd/flagger pkg/apis/flagger/v1beta1/canary.go: GetAnalysisInterval "
        "(default 60s), GetAnalysisThreshold (default 1), GetProgressDeadlineSeconds "
        "(default 600s)",
    },
    "documented_example": {
        "analysis_interval_s": 60,
        "threshold": 5,
        "time_to_rollback_s": 300,
        "source": "the `interval: 1m` and `threshold: 5` values used in Flagger's canary "
        "analysis examples and tutorials (docs.flagger.app); not code defaults",
    },
}


def suite_rollback(size: str, work: Path) -> dict[str, Any]:
    fleet = FLEETS[size]
    expected = sum(fleet_counts(fleet).values())
    c = cluster_for(fleet)
    op = Operator(c.kubeconfig, work / "operator.log", resync_seconds=2)
    op.start()
    timeout = 120 + expected * 0.4
    runs: list[dict[str, Any]] = []
    try:
        for deadline in ROLLBACK_DEADLINES[size]:
            ns = f"rollback-{deadline}"
            c.namespace(ns)
            c.apply(ns, fleet_model("digits", "1.0.0", deadline))
            timed_rollout(c, ns, expected, "1.0.0", "digits", timeout)
            wait_for(lambda n=ns: promoted(c, n, "digits"), timeout=timeout, what="promotion")
            t0 = time.monotonic()
            c.apply(ns, fleet_model("digits", "1.1.0-never-ready", deadline))
            rolled_at = None
            min_ready = 1.0
            while True:
                now = time.monotonic() - t0
                em = c.get_em(ns, "digits")
                if rolled_at is None and condition(em, "RolledBack") == "True":
                    rolled_at = now
                items = daemonsets(c, ns)
                ready = sum(d.status.number_ready or 0 for d in items)
                min_ready = min(min_ready, ratio(ready, expected))
                if rolled_at is not None and all_done(items, expected, "1.0.0"):
                    restored_at = now
                    break
                if now > deadline + timeout:
                    raise TimeoutError(f"no rollback within {deadline + timeout:.0f}s")
                time.sleep(POLL)
            good, total = pods_on(c, ns, "1.0.0")
            r = {
                "progress_deadline_s": deadline,
                "rolled_back_condition_from_apply_s": rounded(rolled_at, 2),
                "rolled_back_condition_after_deadline_s": rounded(rolled_at - deadline, 2),
                "all_pods_restored_from_apply_s": rounded(restored_at, 2),
                "all_pods_restored_after_deadline_s": rounded(restored_at - deadline, 2),
                "min_ready_fraction_during_bad_rollout": rounded(min_ready, 3),
                "pods_on_stable_and_ready": good,
                "pods_total": total,
                "restore_success": rounded(ratio(good, expected), 4),
            }
            log(f"rollback deadline {deadline}: {r}")
            runs.append(r)
            c.kubectl("delete", "edgemodel", "digits", "-n", ns, "--wait=true")
            wait_no_pods(c, ns, timeout)
    finally:
        op.stop()
    return {
        "fleet": fleet,
        "nodes": expected,
        "resync_seconds": 2,
        "serving_probe": "periodSeconds 2 x failureThreshold 2 (4 s stabilization window)",
        "bad_version": "image tag 1.1.0-never-ready (KWOK keeps such pods not Ready)",
        "runs": runs,
        "flagger": FLAGGER,
    }
