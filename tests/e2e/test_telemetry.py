"""Metric-gated rollouts and fleet telemetry on the real node with a real Prometheus
(hack/monitoring.py: Debian's Prometheus scraping the model servers found through the
Kubernetes API, and this module's operator).

A version that answers slowly, and one that fails on real images while passing the active
probe, each fail their analysis and are rolled back while the stable version keeps
serving a client that counts every failure; status.telemetry shows per-cohort figures
that match what that client measured; and every query of the chart's alert rules and
Grafana dashboard runs on the live Prometheus and names only metrics it knows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from clusterkit import SESSION, STATE, Cluster, OperatorProcess, wait_until
from test_edgemodel import apply, condition, get_em
from test_realnode import (
    broken,
    cluster_ip,
    digits_model,  # noqa: F401  (a fixture)
    edgemodel,
    publish,
    revision_after,
    wait_promoted,
    wait_rolled_back,
)

from conftest import CRD, ModelStore, RealNode, start_operator

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgemodel-operator"
WINDOW = 20  # seconds: the analysis's rate window, and the telemetry's
P99_MAX = 0.1  # seconds; the digits model answers in a few milliseconds, the slow one in 0.15 s
ANALYSIS = {
    "windowSeconds": WINDOW,
    "metrics": [
        {"name": "errors", "type": "ErrorRate", "max": 0.05},
        {"name": "p99", "type": "LatencyP99", "max": P99_MAX},
    ],
}


def _monitoring(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVCLUSTER_STATE": str(STATE)}
    return subprocess.run([sys.executable, str(ROOT / "hack" / "monitoring.py"), *args],
                          env=env, text=True, capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def prometheus(cluster: Cluster) -> Iterator[str]:
    """The local cluster's Prometheus: a running one is reused (and reloaded), one started
    here is stopped at the end."""
    started = _monitoring("status").returncode != 0
    up = _monitoring("up")
    assert up.returncode == 0, up.stderr
    url = _monitoring("env").stdout.strip().split("=", 1)[1]
    yield url
    if started:
        _monitoring("down")


@pytest.fixture(scope="module")
def gated_operator(
    cluster: Cluster, crd: Path, server_images: str, prometheus: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:  # fmt: skip
    """An operator with the active probe and Prometheus, its own metrics scraped too."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = start_operator(cluster, log, EDGEMODEL_SERVER_IMAGE=server_images,
                          EDGEMODEL_ACTIVE_PROBE="true", EDGEMODEL_PROMETHEUS_URL=prometheus,
                          EDGEMODEL_TELEMETRY_WINDOW_SECONDS=str(WINDOW))  # fmt: skip
    name = f"e2e-{SESSION}"
    _monitoring("register", name, proc.env["EDGEMODEL_METRICS_ADDRESS"])
    yield proc
    _monitoring("unregister", name)
    proc.stop()


@pytest.fixture(scope="module")
def crd_kept(cluster: Cluster, crd: Path) -> Iterator[None]:
    """This checkout's CRD, applied again every 2 s while the module runs. The cluster is
    shared with other checkouts' test sessions, which apply their own copy; one that does
    not know spec.rollout.analysis yet makes the API server drop it from the next write.
    The fields here only add to the schema, so keeping them in place harms no one."""
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(2):
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD),
                            check=False)  # fmt: skip

    thread = threading.Thread(target=keep, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


pytestmark = pytest.mark.usefixtures("crd_kept", "gated_operator")


class TimedCaller:
    """An app calling the model through its Service in a loop, a new connection per
    request; it keeps the time and latency of every answer and every failure."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        self.url, self.body = url, body
        self.answers: list[tuple[float, float]] = []  # (when, seconds)
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            try:
                answer = requests.post(self.url, json=self.body, timeout=5)
                if answer.status_code == 200 and answer.json()["outputs"]:
                    self.answers.append((time.time(), time.time() - started))
                else:
                    self.failures.append((time.time(), f"HTTP {answer.status_code}"))
            except (requests.RequestException, ValueError, KeyError) as err:
                self.failures.append((time.time(), f"{type(err).__name__}: {err}"))
            time.sleep(0.05)

    def between(self, start: float, end: float) -> tuple[int, int, list[float]]:
        """Answers, failures and latencies of requests that ended in [start, end]."""
        latencies = [s for t, s in self.answers if start <= t <= end]
        failed = sum(1 for t, _ in self.failures if start <= t <= end)
        return len(latencies), failed, latencies

    def __enter__(self) -> TimedCaller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def gated(name: str, node: RealNode, uri: str, sha: str, version: str) -> dict[str, Any]:
    em = edgemodel(name, node, uri, sha, version)
    em["spec"]["rollout"]["analysis"] = ANALYSIS
    return em


def apply_gated(cluster: Cluster, namespace: str, em: dict[str, Any]) -> None:
    """Apply with this checkout's CRD in place: test sessions of other checkouts share the
    cluster and apply theirs, which may not know spec.rollout.analysis yet (the API
    server then refuses the field); then the CRD is applied again and the EdgeModel too."""
    for attempt in range(5):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/edgemodels.edgeai.dev")  # fmt: skip
        try:
            apply(cluster, namespace, em)
            return
        except AssertionError as err:
            if 'unknown field "spec.rollout.analysis"' not in str(err) or attempt == 4:
                raise


def only_stable(cluster: Cluster, namespace: str, name: str, stable: str) -> None:
    """Wait until the model's pods are its two stable ones, Ready, the others gone (a pod
    in its preStop pause still answers), and kube-proxy has had a sync to follow."""

    def check() -> bool:
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector=f"edgeai.dev/edgemodel={name}"
        ).items
        revisions = [(p.metadata.annotations or {}).get("edgeai.dev/revision") for p in pods]
        ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                        for c in p.status.conditions or [])]  # fmt: skip
        return revisions == [stable, stable] and len(ready) == 2

    wait_until(check, timeout=120, what=f"only the stable pods of {name} left")
    time.sleep(2)


def endpoints(cluster: Cluster, namespace: str, name: str) -> int:
    targets = (get_em(cluster, namespace, name).get("status") or {}).get("targets") or [{}]
    return int(targets[0].get("endpoints") or 0)


def serve_stable(
    cluster: Cluster, namespace: str, node: RealNode, store: ModelStore, digits: Any, name: str
) -> tuple[str, dict[str, Any]]:
    """The good version, Ready with both pods in its Service; its URL and body to call."""
    uri, sha = publish(store, f"{name}/1.0.0/model.onnx", digits.model.read_bytes())
    apply_gated(cluster, namespace, gated(name, node, uri, sha, "1.0.0"))
    wait_until(lambda: endpoints(cluster, namespace, name) == 2, timeout=240,
               what=f"{name}'s two pods serving")  # fmt: skip
    x, _ = digits.load_samples()
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                        "data": x[0].tolist()}]}  # fmt: skip
    url = f"http://{cluster_ip(cluster, namespace, f'{name}-cpu')}:8080/v2/models/{name}/infer"
    return url, body


def rolled_back_at(em: dict[str, Any]) -> float:
    stamp = condition(em, "RolledBack")["lastTransitionTime"]
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def test_versions_failing_their_analysis_roll_back_while_the_stable_one_serves(
    cluster: Cluster, namespace: str, real_node: RealNode, model_store: ModelStore,
    digits_model: Any, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    url, body = serve_stable(cluster, namespace, real_node, model_store, digits_model, "gated")
    with TimedCaller(url, body) as caller:
        started = time.monotonic()
        stable = wait_promoted(cluster, namespace, "gated")
        print(f"promoted after {time.monotonic() - started:.1f} s of analysis with traffic")
        assert {r["outcome"] for r in stable["status"]["analysis"]["results"]} == {"Passed"}

        # A slow version: the probe's one inference passes, p99 under traffic does not.
        uri, sha = publish(model_store, "gated/slow/model.onnx", broken("slow", tmp_path))
        apply_gated(cluster, namespace, gated("gated", real_node, uri, sha, "2.0.0-slow"))
        slow = revision_after(cluster, namespace, "gated", 2)
        applied = time.time()
        em = wait_rolled_back(cluster, namespace, "gated", slow)
        rolled = condition(em, "RolledBack")
        assert rolled["reason"] == "AnalysisFailed", rolled
        assert "p99 on target cpu = " in rolled["message"]
        assert f"above max {P99_MAX:g}; query: histogram_quantile(0.99" in rolled["message"]
        assert f'revision="{slow}"' in rolled["message"]
        print(f"slow version rolled back {rolled_back_at(em) - applied:.1f} s after its apply")

        def event() -> list[str]:
            found = cluster.core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=gated,reason=RolledBack"
            ).items
            return [e.message for e in found if "histogram_quantile" in e.message]

        said = wait_until(event, timeout=30, what="a RolledBack Event naming the query")
        assert "above max" in said[0] and f'revision="{slow}"' in said[0], said
        slow_latencies = [s for t, s in caller.answers if t > applied]
        good = stable["status"]["stableRevision"]
        only_stable(cluster, namespace, "gated", good)
        assert caller.failures == [], caller.failures[:5]  # slow, but every answer came
        assert max(slow_latencies) > P99_MAX, "the slow version answered some requests"

        # A version that fails on real images and answers the probe's zeros.
        uri, sha = publish(model_store, "gated/picky/model.onnx", broken("picky", tmp_path))
        apply_gated(cluster, namespace, gated("gated", real_node, uri, sha, "3.0.0-picky"))
        picky = revision_after(cluster, namespace, "gated", 3)
        em = wait_rolled_back(cluster, namespace, "gated", picky)
        rolled = condition(em, "RolledBack")
        assert rolled["reason"] == "AnalysisFailed", rolled
        assert "errors on target cpu = " in rolled["message"]
        assert (
            "above max 0.05; query: (sum(rate(edgemodel_inference_errors_total" in rolled["message"]
        )
        assert em["status"]["stableRevision"] == stable["status"]["stableRevision"]
        first_failure = caller.failures[0][0]
        reaction = rolled_back_at(em) - first_failure
        print(
            f"erroring version rolled back {reaction:.1f} s after the client's first failure; "
            f"{len(caller.failures)} failed requests while it served"
        )
        only_stable(cluster, namespace, "gated", good)
        quiet_from = time.time()
        time.sleep(8)
    # Failures only while the erroring version served, none once the stable one was back.
    assert all(t < quiet_from for t, _ in caller.failures), caller.failures[-3:]
    assert all("HTTP 500" in why for _, why in caller.failures), caller.failures[:3]
    assert reaction < 3 * WINDOW, reaction
    assert caller.between(quiet_from, time.time())[0] > 20


def prometheus_get(url: str, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{query}", timeout=10) as resp:
        return json.load(resp)


def chart_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard query of the chart."""
    built = subprocess.run([str(ROOT / "hack" / "build-helm.sh")], text=True,
                           capture_output=True, check=True)  # fmt: skip
    helm = built.stdout.strip().splitlines()[-1]
    rendered = subprocess.run(
        [helm, "template", "q", str(CHART), "--set", "registry.url=local",
         "--set", "monitoring.prometheusRule.enabled=true",
         "--set", "monitoring.dashboard.enabled=true"],
        text=True, capture_output=True, check=True,
    ).stdout  # fmt: skip
    found = []
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                found += [(f"rule {r['alert']}", r["expr"]) for r in group["rules"]]
        if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("dashboard"):
            dash = json.loads(doc["data"]["edgemodel-fleet.json"])
            found += [(f"panel {p['title']}", t["expr"]) for p in dash["panels"]
                      for t in p["targets"]]  # fmt: skip
            for var in dash["templating"]["list"]:
                if var["type"] == "query":
                    inner = re.fullmatch(r"label_values\((.+), \w+\)", var["definition"])
                    assert inner, var["definition"]
                    found.append((f"variable {var['name']}", inner.group(1)))
    return found


GRAFANA = {"$__rate_interval": "1m", "$namespace": ".*", "$model": ".*"}


def test_status_telemetry_matches_the_client_and_every_chart_query_runs(
    cluster: Cluster, namespace: str, real_node: RealNode, model_store: ModelStore,
    digits_model: Any, prometheus: str,  # noqa: F811
) -> None:  # fmt: skip
    url, body = serve_stable(cluster, namespace, real_node, model_store, digits_model, "seen")
    with TimedCaller(url, body) as caller:
        wait_promoted(cluster, namespace, "seen")
        begun = time.time()

        def fresh() -> dict[str, Any] | None:
            telemetry = get_em(cluster, namespace, "seen")["status"].get("telemetry") or {}
            seen = telemetry.get("observedAt", "")
            at = time.mktime(time.strptime(seen, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone if seen \
                else 0  # fmt: skip
            return telemetry if at >= begun + WINDOW and telemetry.get("cohorts") else None

        telemetry = wait_until(fresh, timeout=4 * WINDOW, what="telemetry over a full window")
    observed = time.mktime(time.strptime(telemetry["observedAt"], "%Y-%m-%dT%H:%M:%SZ"))
    observed -= time.timezone
    (cohort,) = telemetry["cohorts"]
    assert telemetry["source"] == "prometheus" and "message" not in telemetry
    assert (cohort["target"], cohort["accelerator"], cohort["architecture"], cohort["nodeModel"],
            cohort["pods"]) == ("cpu", "cpu", "amd64", "edge-x86-small", 2)  # fmt: skip
    answered, failed, latencies = caller.between(observed - WINDOW, observed)
    client_rate = (answered + failed) / WINDOW
    print(
        f"telemetry {cohort}; client: {client_rate:.2f} req/s, "
        f"p50 {sorted(latencies)[len(latencies) // 2]:.4f} s"
    )
    assert cohort["requestsPerSecond"] == pytest.approx(client_rate, rel=0.25)
    assert failed == 0 and cohort["errorRate"] == 0
    latencies.sort()
    client_p50, client_p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    # The server measures from the request's arrival to its answer: less than the client.
    assert 0 < cohort["latencyP50Seconds"] <= client_p50
    assert 0 < cohort["latencyP99Seconds"] <= max(client_p99, 0.005)  # its bucket's top

    # Every alert rule and dashboard query parses and names only metrics Prometheus knows.
    known = set(prometheus_get(prometheus, "/api/v1/label/__name__/values")["data"])
    known |= set(prometheus_get(prometheus, "/api/v1/metadata")["data"])
    queries = chart_queries()
    assert len(queries) >= 20
    for where, expr in queries:
        for key, value in GRAFANA.items():
            expr = expr.replace(key, value)
        answer = prometheus_get(prometheus, "/api/v1/query", query=expr)
        assert answer["status"] == "success", (where, expr, answer)
        for name in set(re.findall(r"\bedgemodel_[a-z0-9_]+", expr)):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in known or base in known, f"{where}: unknown metric {name}"
    print(f"{len(queries)} chart queries ran on Prometheus")
    rules = prometheus_get(prometheus, "/api/v1/rules")["data"]["groups"]
    loaded = {r["name"] for g in rules for r in g["rules"]}
    assert {"EdgeModelRolledBack", "EdgeModelDegraded", "EdgeModelLatencyHigh",
            "EdgeModelErrorRateHigh"} <= loaded  # fmt: skip
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
