"""build_workload against golden YAML, plus the properties every child must have.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures import FLEET, spec

from edgemodel_operator.api.accelerators import DEFAULT_PROFILES
from edgemodel_operator.api.spec import parse_spec
from edgemodel_operator.reconcile.observed import node_info
from edgemodel_operator.reconcile.placement import place
from edgemodel_operator.reconcile.workloads import Owner, WorkloadSettings, build_workload

GOLDEN = Path(__file__).parent / "golden"
OWNER = Owner("edgeai.dev/v1alpha1", "EdgeModel", "digits", "line-3", "uid-1")
SETTINGS = WorkloadSettings(default_image="registry.local/server:0.1.0-{accelerator}")
CASES = {
    "deployment-cpu": {"name": "cpu", "accelerator": "cpu", "replicas": 2,
                       "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
    "daemonset-gpu": {"name": "jetson", "accelerator": "gpu", "placement": "perNode"},
    "deployment-npu-own-image": {"name": "npu", "accelerator": "npu", "replicas": 1,
                                 "image": "example.com/my-server:2"},
}  # fmt: skip


def build(target: dict[str, Any]) -> dict[str, Any]:
    parsed = parse_spec(spec(target))
    placed = place(parsed.targets[0], [node_info(n) for n in FLEET], DEFAULT_PROFILES)
    return build_workload(OWNER, parsed, placed, SETTINGS, "rev1")


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_golden(case: str) -> None:
    built = build(CASES[case])
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(yaml.safe_dump(built, sort_keys=True))
    assert built == yaml.safe_load(path.read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_restricted_and_owned(case: str) -> None:
    built = build(CASES[case])
    owner = built["metadata"]["ownerReferences"][0]
    assert owner["controller"] and owner["uid"] == "uid-1"
    pod = built["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    selector = built["spec"]["selector"]["matchLabels"]
    assert selector == {"edgeai.dev/edgemodel": "digits", "edgeai.dev/target": CASES[case]["name"]}
    assert selector.items() <= built["spec"]["template"]["metadata"]["labels"].items()


def test_gpu_deployment_never_surges_past_its_devices() -> None:
    built = build({"name": "gpu", "accelerator": "gpu", "replicas": 2})
    strategy = built["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 0, "maxUnavailable": 1}
    assert built["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"nvidia.com/gpu": "1"}
    }


def test_spec_hash_changes_with_what_runs_only() -> None:
    one = build({"name": "cpu", "accelerator": "cpu", "replicas": 2})
    two = build({"name": "cpu", "accelerator": "cpu", "replicas": 3})
    again = build({"name": "cpu", "accelerator": "cpu", "replicas": 2})
    key = "edgeai.dev/spec-hash"
    assert one["metadata"]["annotations"][key] == again["metadata"]["annotations"][key]
    assert one["metadata"]["annotations"][key] != two["metadata"]["annotations"][key]
