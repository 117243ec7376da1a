"""Health-gated rollouts on the real cluster. KWOK stages make the pods of a chosen image
never become Ready (image tag containing `never-ready`) or turn NotReady 10 s after being
Ready (`turns-not-ready`): the bad versions a real site would see."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest
from clusterkit import POOL_PREFIX, Cluster, OperatorProcess, pod_ready, wait_until
from test_edgemodel import apply, condition, get_em, minimal, wait_condition

pytestmark = pytest.mark.usefixtures("operator")

DEADLINE = 10  # progressDeadlineSeconds, the smallest the API allows
RESYNC = 2  # the operator's check period in these tests (EDGEMODEL_RESYNC_SECONDS)


def model(name: str, image: str, probe: dict[str, int] | None = None) -> dict[str, Any]:
    em = minimal(name, [{"name": "cpu", "accelerator": "cpu", "replicas": 2, "image": image}])
    em["spec"]["rollout"] = {"progressDeadlineSeconds": DEADLINE}
    # Promotion waits periodSeconds x failureThreshold; 2 x 2 keeps the tests short.
    em["spec"]["serving"] = {"probe": probe or {"periodSeconds": 2, "failureThreshold": 2}}
    return em


def with_image(em: dict[str, Any], image: str) -> dict[str, Any]:
    em["spec"]["targets"][0]["image"] = image
    return em


def promoted(cluster: Cluster, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    """The EdgeModel once the revision its current spec asks for is the stable one."""

    def check() -> dict[str, Any] | None:
        em = get_em(cluster, namespace, name)
        status = em.get("status") or {}
        current = status.get("observedGeneration") == em["metadata"]["generation"]
        ok = status.get("stableRevision") and status["stableRevision"] == status.get("revision")
        return em if ok and current else None

    return wait_until(check, timeout=timeout, what=f"{name}'s revision to be promoted to stable")


def events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    items = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=EdgeModel"
    ).items
    return [(e.type, e.reason) for e in sorted(items, key=lambda e: e.metadata.creation_timestamp)]


def serving_image(cluster: Cluster, namespace: str, name: str) -> str:
    dep = cluster.apps.read_namespaced_deployment(f"{name}-cpu", namespace)
    return str(dep.spec.template.spec.containers[0].image)


def ready_pods(cluster: Cluster, namespace: str, name: str) -> set[str]:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"edgeai.dev/edgemodel={name}"
    )
    return {p.metadata.name for p in pods.items if pod_ready(p)}


def metric(operator: OperatorProcess, line_start: str) -> float:
    url = f"http://{operator.env['EDGEMODEL_METRICS_ADDRESS']}/metrics"
    with urllib.request.urlopen(url) as rsp:
        for line in rsp.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_bad_version_is_rolled_back_while_the_stable_pods_keep_serving(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    em = model("detector", "edgemodel-server:1.0.0-cpu")
    apply(cluster, namespace, em)
    good = promoted(cluster, namespace, "detector")["status"]["stableRevision"]
    stable_pods = ready_pods(cluster, namespace, "detector")
    assert len(stable_pods) == 2
    series = f'edgemodel_rollbacks_total{{edgemodel="detector",namespace="{namespace}"}}'
    rollbacks = metric(operator, series)

    apply(cluster, namespace, with_image(em, "edgemodel-server:1.1.0-never-ready"))
    started = time.monotonic()
    while True:  # every sample: the stable pods are still there and Ready
        assert stable_pods <= ready_pods(cluster, namespace, "detector")
        current = get_em(cluster, namespace, "detector")
        rolled = condition(current, "RolledBack")
        if rolled and rolled["status"] == "True":
            break
        assert time.monotonic() - started < DEADLINE + 3 * RESYNC + 10, "no rollback in time"
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    assert elapsed <= DEADLINE + 3 * RESYNC + 5, f"rolled back after {elapsed:.1f}s"

    status = current["status"]
    bad = status["revision"]
    assert status["stableRevision"] == good != bad
    assert status["phase"] == "RolledBack"
    assert [f["revision"] for f in status["failedRevisions"]] == [bad]
    degraded = condition(current, "Degraded")
    assert degraded["reason"] == "RolledBack"
    assert f"Revision {bad} failed (ProgressDeadlineExceeded" in degraded["message"]
    assert f"stable revision {good}" in degraded["message"]
    assert "Evidence: cpu: pod detector-cpu-" in degraded["message"]
    assert serving_image(cluster, namespace, "detector") == "edgemodel-server:1.0.0-cpu"
    wait_until(
        lambda: (
            ready_pods(cluster, namespace, "detector") == stable_pods
            and len(cluster.core.list_namespaced_pod(namespace).items) == 2
        ),
        timeout=30,
        what="the bad revision's pods to be gone and the stable ones to serve alone",
    )
    assert ("Warning", "RolledBack") in events(cluster, namespace, "detector")
    assert metric(operator, series) == rollbacks + 1

    # No flapping: the failed revision is held, not retried, while the spec asks for it.
    time.sleep(3 * RESYNC)
    assert serving_image(cluster, namespace, "detector") == "edgemodel-server:1.0.0-cpu"
    assert [r for _, r in events(cluster, namespace, "detector")].count("RolledBack") == 1


def test_bad_to_bad_keeps_the_last_good_and_bad_to_good_rolls_forward(
    cluster: Cluster, namespace: str
) -> None:
    # Pods that turn NotReady 10 s after being Ready are caught inside the stabilization
    # window (5 s x 3 = 15 s), before promotion.
    em = model("sorter", "edgemodel-server:1.0.0-cpu", {"periodSeconds": 5, "failureThreshold": 3})
    apply(cluster, namespace, em)
    good = promoted(cluster, namespace, "sorter")["status"]["stableRevision"]

    apply(cluster, namespace, with_image(em, "edgemodel-server:1.1.0-never-ready"))
    wait_condition(cluster, namespace, "sorter", "RolledBack", "True", timeout=40)
    apply(cluster, namespace, with_image(em, "edgemodel-server:1.2.0-turns-not-ready"))
    flaky = wait_until(
        lambda: (
            (s := get_em(cluster, namespace, "sorter")["status"])
            and len(s.get("failedRevisions", [])) == 2
            and s
        ),
        timeout=60,
        what="the second bad revision to fail its gates",
    )
    assert flaky["failedRevisions"][-1]["reason"] == "ReadinessLost"
    assert flaky["stableRevision"] == good
    wait_until(
        lambda: serving_image(cluster, namespace, "sorter") == "edgemodel-server:1.0.0-cpu",
        timeout=20,
        what="the last good image to be restored",
    )

    apply(cluster, namespace, with_image(em, "edgemodel-server:1.3.0-cpu"))
    fixed = promoted(cluster, namespace, "sorter")
    assert fixed["status"]["stableRevision"] not in (good, *[
        f["revision"] for f in fixed["status"]["failedRevisions"]
    ])  # fmt: skip
    assert condition(fixed, "Degraded")["status"] == "False"
    assert condition(fixed, "RolledBack")["status"] == "False"
    assert condition(fixed, "Ready")["status"] == "True"
    assert serving_image(cluster, namespace, "sorter") == "edgemodel-server:1.3.0-cpu"
    reasons = [r for _, r in events(cluster, namespace, "sorter")]
    assert reasons.count("RolledBack") == 2  # one per failed revision, none while holding
    assert "Promoted" in reasons and "Recovered" in reasons


def test_first_version_failing_holds_and_says_there_is_nothing_to_go_back_to(
    cluster: Cluster, namespace: str
) -> None:
    apply(cluster, namespace, model("fresh", "edgemodel-server:1.0.0-never-ready"))
    em = wait_condition(cluster, namespace, "fresh", "Degraded", "True", timeout=40)
    degraded = condition(em, "Degraded")
    assert degraded["reason"] == "ProgressDeadlineExceeded"
    assert "no healthy revision to go back to" in degraded["message"]
    assert em["status"]["phase"] == "Failed"
    assert "stableRevision" not in em["status"]
    assert serving_image(cluster, namespace, "fresh") == "edgemodel-server:1.0.0-never-ready"


def test_operator_down_mid_rollout_rolls_back_once_and_acts_on_the_last_edit(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    em = model("line", "edgemodel-server:1.0.0-cpu")
    apply(cluster, namespace, em)
    good = promoted(cluster, namespace, "line")["status"]["stableRevision"]
    apply(cluster, namespace, with_image(em, "edgemodel-server:1.1.0-never-ready"))
    wait_until(
        lambda: serving_image(cluster, namespace, "line").endswith("never-ready"),
        timeout=20,
        what="the bad rollout to start",
    )
    operator.kill()
    try:
        time.sleep(DEADLINE + 1)  # the deadline passes while no operator runs
    finally:
        operator.start()
    rolled = wait_condition(cluster, namespace, "line", "RolledBack", "True", timeout=30)
    assert rolled["status"]["stableRevision"] == good
    time.sleep(3 * RESYNC)
    assert [r for _, r in events(cluster, namespace, "line")].count("RolledBack") == 1
    assert len(cluster.apps.list_namespaced_deployment(namespace).items) == 1

    operator.kill()
    try:  # three edits while it is down: it acts on the last one only
        for tag in ("1.2.0-never-ready", "1.3.0-turns-not-ready", "1.4.0-cpu"):
            apply(cluster, namespace, with_image(em, f"edgemodel-server:{tag}"))
    finally:
        operator.start()
    fixed = promoted(cluster, namespace, "line")
    assert serving_image(cluster, namespace, "line") == "edgemodel-server:1.4.0-cpu"
    assert len(fixed["status"]["failedRevisions"]) == 1
    assert len(cluster.apps.list_namespaced_deployment(namespace).items) == 1


def fleet_model(
    name: str, image: str, waves: list[dict[str, int]], **rollout: Any
) -> dict[str, Any]:
    em = minimal(name, [{"name": "edge", "accelerator": "cpu", "placement": "perNode",
                         "image": image}])  # fmt: skip
    em["spec"]["rollout"] = {"progressDeadlineSeconds": DEADLINE, "waves": waves, **rollout}
    em["spec"]["serving"] = {"probe": {"periodSeconds": 2, "failureThreshold": 2}}
    return em


def pods_by_node(cluster: Cluster, namespace: str, name: str) -> dict[str, tuple[str, str, bool]]:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"edgeai.dev/edgemodel={name}"
    )
    return {
        p.spec.node_name: (p.metadata.uid, p.spec.containers[0].image, pod_ready(p))
        for p in pods.items
        if p.spec.node_name and not p.metadata.deletion_timestamp
    }


def test_waves_move_the_fleet_step_by_step(cluster: Cluster, namespace: str) -> None:
    em = fleet_model("fleet", "edgemodel-server:1.0.0-cpu", [{"count": 1}, {"percent": 50}])
    apply(cluster, namespace, em)
    promoted(cluster, namespace, "fleet")
    nodes = len(pods_by_node(cluster, namespace, "fleet"))
    ds = cluster.apps.read_namespaced_daemon_set("fleet-edge", namespace)
    assert ds.spec.update_strategy.type == "OnDelete"

    apply(cluster, namespace, with_image(em, "edgemodel-server:1.1.0-cpu"))
    seen: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = [img for _, img, _ in pods_by_node(cluster, namespace, "fleet").values()]
        moved = sum(1 for img in now if img.endswith("1.1.0-cpu"))
        if not seen or seen[-1] != moved:
            seen.append(moved)
        if moved == nodes and (
            get_em(cluster, namespace, "fleet")["status"].get("stableRevision")
            == get_em(cluster, namespace, "fleet")["status"]["revision"]
        ):
            break
        time.sleep(0.2)
    assert seen == sorted(seen), seen  # never back
    assert 1 in seen and (nodes + 1) // 2 in seen and seen[-1] == nodes, seen
    reasons = [r for _, r in events(cluster, namespace, "fleet")]
    assert reasons.count("ReplacedPods") >= 3 and "Promoted" in reasons


def test_a_failing_canary_wave_rolls_back_only_the_nodes_it_touched(
    cluster: Cluster, namespace: str
) -> None:
    canary = f"{POOL_PREFIX}-cpu-5"
    cluster.core.patch_node(canary, {"metadata": {"labels": {"edgeai.dev/canary": "true"}}})
    try:
        em = fleet_model("careful", "edgemodel-server:1.0.0-cpu", [{"count": 1}],
                         canarySelector={"edgeai.dev/canary": "true"})  # fmt: skip
        apply(cluster, namespace, em)
        promoted(cluster, namespace, "careful")
        before = pods_by_node(cluster, namespace, "careful")
        apply(cluster, namespace, with_image(em, "edgemodel-server:1.1.0-never-ready"))
        wait_until(
            lambda: (
                pods_by_node(cluster, namespace, "careful")
                .get(canary, ("", "", 0))[1]
                .endswith("never-ready")
            ),
            timeout=20,
            what="the canary node to get the new version first",
        )
        rolled = wait_condition(cluster, namespace, "careful", "RolledBack", "True", timeout=40)
        assert "pod careful-edge-" in condition(rolled, "Degraded")["message"]
        after = wait_until(
            lambda: (
                (p := pods_by_node(cluster, namespace, "careful"))
                and all(img.endswith("1.0.0-cpu") and ok for _, img, ok in p.values())
                and len(p) == len(before)
                and p
            ),
            timeout=30,
            what="every node back on the stable version",
        )
        untouched = {n: uid for n, (uid, _, _) in before.items() if n != canary}
        assert {n: after[n][0] for n in untouched} == untouched  # same pods: never replaced
        assert after[canary][0] != before[canary][0]
    finally:
        cluster.core.patch_node(canary, {"metadata": {"labels": {"edgeai.dev/canary": None}}})
