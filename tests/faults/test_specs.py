"""Scenario 8: property-based EdgeModels against the real API server and the operator.

For every generated EdgeModel (hypothesis, derandomized so CI sees the same examples;
FAULTS_EXPLORE=<n> explores n fresh ones):
- what the API server admits (a dry-run create: schema, defaults, CEL), parse_spec accepts,
  and every child the operator would write for it is admitted too (a dry-run server-side
  apply): an admitted spec never turns into a write the API server refuses, forever;
- what parse_spec refuses, the API server refuses, with a message naming the field.
Then a sample of the admitted ones, and the largest spec the schema admits, are created
for real: the operator reconciles each (status for its generation), fails no pass, and
does not loop (no writes once they have settled)."""

from __future__ import annotations

import copy
import json
import os
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from clusterkit import wait_until
from hypothesis import HealthCheck, given, settings
from kit import GROUP, PLURAL, RESYNC, TEST_LABEL, VERSION, Site, current
from kubernetes import client
from specs import edgemodel_specs, readable

from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.spec import parse_spec
from edgemodel_operator.config import load_config
from edgemodel_operator.reconcile.observed import Observed
from edgemodel_operator.reconcile.plan import plan
from edgemodel_operator.wiring import plan_settings

IMAGE = "registry.local/detector:1.0"
EXPLORE = int(os.environ.get("FAULTS_EXPLORE", "0"))
EXAMPLES = EXPLORE or int(os.environ.get("FAULTS_EXAMPLES", "150"))
SAMPLE = 10  # admitted EdgeModels the operator reconciles for real
SETTINGS = plan_settings(load_config({}))


def dry_run_create(site: Site, name: str, spec: dict[str, Any]) -> tuple[dict | None, str]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeModel",
            "metadata": {"name": name, "namespace": site.namespace}, "spec": spec}  # fmt: skip
    try:
        stored = site.cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, site.namespace, PLURAL, body, dry_run="All"
        )
    except client.ApiException as err:
        if err.status not in (400, 422):
            raise
        return None, str(json.loads(err.body).get("message", ""))
    return dict(stored), ""


def children_admitted(site: Site, stored: dict[str, Any], nodes: list[dict[str, Any]]) -> list[str]:
    """Dry-run server-side applies of every child the first pass would write: the
    refusals, as the API server words them."""
    body = copy.deepcopy(stored)
    body["metadata"].setdefault("uid", str(uuid.uuid4()))
    body["metadata"]["generation"] = 1
    done = plan(body, Observed(nodes=nodes, children=[], pods=[]), SETTINGS, datetime.now(UTC))
    refused = []
    apps, core = client.AppsV1Api(site.cluster.api), client.CoreV1Api(site.cluster.api)
    call = {"Deployment": apps.patch_namespaced_deployment,
            "DaemonSet": apps.patch_namespaced_daemon_set,
            "Service": core.patch_namespaced_service}  # fmt: skip
    for obj in done.apply:
        try:
            call[obj["kind"]](obj["metadata"]["name"], site.namespace, obj,
                              field_manager="faults", force=True, dry_run="All",
                              _content_type="application/apply-patch+yaml")  # fmt: skip
        except client.ApiException as err:
            message = json.loads(err.body).get("message", err.reason)
            refused.append(f"{obj['kind']} {obj['metadata']['name']}: {message}")
    return refused


def largest_spec() -> dict[str, Any]:
    """What the schema's bounds allow at most: 16 targets, each with 32 node labels and 16
    tolerations of the longest keys and values (253-character prefixes)."""
    prefix = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])

    def key(kind: str, j: int) -> str:
        return f"{prefix}/{kind}{j:02d}" + "n" * 60

    def target(i: int) -> dict[str, Any]:
        return {
            "name": f"t{i:02d}" + "x" * 17, "accelerator": "cpu", "replicas": 1,
            "image": "registry.local/" + "i" * 480 + ":1",
            "nodeSelector": {key("k", j): "v" * 63 for j in range(32)},
            "tolerations": [{"key": key("t", j), "operator": "Equal", "value": "v" * 63,
                             "effect": "NoSchedule"} for j in range(16)],
        }  # fmt: skip

    return {
        "model": {"uri": "https://m.example.com/" + "p" * 2000, "sha256": "ab" * 32,
                  "version": "1.0.0"},
        "targets": [target(i) for i in range(16)],
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.scenario(
    "8",
    "Property-based specs (hypothesis) and the largest spec the schema admits",
    "admitted by the API server => parse_spec accepts it and every child the operator "
    "writes for it is admitted; refused by parse_spec => refused by the API server with a "
    "message naming the field; a sample and the largest spec reconcile without a failed "
    "pass and without a write loop",
)
def test_specs_admitted_are_reconciled_and_refused_are_explained(site: Site, start: Any) -> None:
    nodes = [site.cluster.api.sanitize_for_serialization(n)
             for n in site.cluster.core.list_node().items]  # fmt: skip
    admitted: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    seen = {"admitted": 0, "refused": 0}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not EXPLORE, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(edgemodel_specs(IMAGE))
    def check(example: tuple[str, dict[str, Any]]) -> None:
        name, spec = example
        stored, message = dry_run_create(site, name, spec)
        try:
            parse_spec(spec)
            parsed_raw = ""
        except InvalidSpec as err:
            parsed_raw = str(err)
        if stored is not None:
            seen["admitted"] += 1
            try:
                parse_spec(stored["spec"])
            except InvalidSpec as err:
                problems.append(f"admitted but parse_spec refuses ({err}): {spec}")
                return
            for refusal in children_admitted(site, stored, nodes):
                problems.append(f"admitted, but its child is refused: {refusal}; spec: {spec}")
            if len(admitted) < 200:
                admitted.append((name, spec))
        else:
            seen["refused"] += 1
            if not readable(message):
                problems.append(f"refused without naming the field: {message!r}")
        if parsed_raw and stored is not None:
            problems.append(f"parse_spec refuses ({parsed_raw}) what the API server admits: "
                            f"{spec}")  # fmt: skip

    check()
    assert not problems, "\n".join(_kinds(problems))
    assert seen["admitted"] >= EXAMPLES // 10 and seen["refused"] >= EXAMPLES // 10, seen

    # The largest spec: the API server admits it, and so must everything after it.
    big = largest_spec()
    stored, message = dry_run_create(site, "largest", big)
    assert stored is not None, message
    assert len(json.dumps(big)) > 262_144  # more than the API server allows for annotations

    # The operator, on a sample and the largest one, for real.
    op = start()
    sample = [(n, s) for n, s in admitted
              if all(isinstance(t.get("replicas", 1), int) and t.get("replicas", 1) <= 3
                     for t in s["targets"])][:SAMPLE]  # fmt: skip
    created = []
    for i, (name, spec) in enumerate([*sample, ("largest", big)]):
        em = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeModel",
              "metadata": {"name": f"{name[:34]}-{i}" if name != "largest" else name,
                           "labels": {TEST_LABEL: site.selector}},
              "spec": spec}  # fmt: skip
        site.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, site.namespace,
                                                            PLURAL, em)  # fmt: skip
        created.append(em["metadata"]["name"])
    for name in created:
        site.wait(name, current, 90, "status written for its generation")
    time.sleep(3 * RESYNC)  # passes that would now fail, or loop, would show
    assert op.metric("edgemodel_reconcile_errors_total") == 0, [
        r.get("event") for r in op.logs() if "failed" in str(r.get("event"))][:5]  # fmt: skip
    wait_until(lambda: _quiet(site, created), timeout=60, what="every phase settled")
    # A loop writes every pass (every RESYNC s), for ever; a few transitions (promotion
    # after the stabilization window, a deadline) write once or twice, and a rollout that a
    # busy machine makes slow writes as its pods turn Ready, until they all have.
    for _ in range(5):
        window = time.time()
        time.sleep(6 * RESYNC)
        late = Counter(e.target.split("?")[0].removesuffix("/status").rsplit("/", 1)[-1]
                       for e in op.proxy.log
                       if e.at > window and e.method in ("PATCH", "DELETE"))  # fmt: skip
        looping = {k: n for k, n in late.items() if n > 2}
        if not looping:
            break
    specs = {n: site.get(n)["spec"] for n in created if any(k.startswith(n) for k in looping)}
    assert not looping, f"writing every pass: {looping}; {specs}"
    assert site.status("largest").get("phase"), site.status("largest")


def _kinds(problems: list[str]) -> list[str]:
    """One line per kind of problem (names and values blanked), with its first example."""
    kinds: dict[str, str] = {}
    for p in problems:
        head, _, example = p.partition("; spec: ")
        kind = re.sub(r'"[^"]*"', '"…"', head.split(" is invalid: ")[-1])
        kind = re.sub(r"\[\d+\]", "[i]", kind)
        kinds.setdefault(kind[:240], example[:300])
    return [f"{k}\n    e.g. {v}" for k, v in list(kinds.items())[:25]]


def _quiet(site: Site, names: list[str]) -> bool:
    """Every EdgeModel's status is for its generation and not mid-rollout."""
    for name in names:
        em = site.get(name)
        if not current(em) or (em.get("status") or {}).get("phase") in (None, "Pending"):
            return False
    return True
