"""parse_spec: defaults filled in, and each rule the operator relies on re-checked."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures import spec

from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.spec import parse_spec


def test_defaults_per_accelerator() -> None:
    parsed = parse_spec(
        spec(
            {"name": "jetson", "accelerator": "gpu", "placement": "perNode"},
            {"name": "npu", "accelerator": "npu"},
            {"name": "cpu", "accelerator": "cpu", "replicas": 3},
        )
    )
    assert [(t.name, t.precision, t.placement, t.replicas) for t in parsed.targets] == [
        ("jetson", "fp16", "perNode", 1),
        ("npu", "int8", "replicas", 1),
        ("cpu", "int8", "replicas", 3),
    ]
    assert parsed.serving.port == 8080
    assert parsed.serving.probe.failure_threshold == 3
    assert parsed.rollout.max_unavailable == "25%"
    assert parsed.rollout.auto_rollback is True
    assert parsed.model.format == "onnx"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"uri": "ftp://x/m.onnx", "sha256": "0" * 64, "version": "1"}}, "uri"),
        ({"model": {"uri": "file:///m.onnx", "sha256": "ABC", "version": "1"}}, "sha256"),
        ({"model": {"uri": "file:///m.onnx", "sha256": "0" * 64}}, "version is required"),
        ({"targets": []}, "at least one target"),
        ({"targets": [{"name": "a", "accelerator": "tpu"}]}, "gpu, npu or cpu"),
        ({"targets": [{"name": "a", "accelerator": "cpu", "precision": "fp16"}]}, "fp32 or int8"),
        ({"targets": [{"name": "a", "accelerator": "npu", "precision": "fp32"}]}, "int8 or fp16"),
        ({"targets": [{"name": "a", "accelerator": "cpu", "placement": "perNode",
                       "replicas": 2}]}, "replicas may only"),
        ({"targets": [{"name": "a", "accelerator": "cpu", "fallback": "cpu"}]}, "fallback"),
        ({"targets": [{"name": "A_b", "accelerator": "cpu"}]}, "DNS label"),
        ({"targets": [{"name": "a", "accelerator": "cpu"}, {"name": "a", "accelerator": "gpu"}]},
         "unique"),
        ({"serving": {"port": 80}}, "spec.serving.port"),
        ({"rollout": {"maxUnavailable": "many"}}, "maxUnavailable"),
        ({"rollout": {"autoRollback": "yes"}}, "autoRollback"),
    ],
)  # fmt: skip
def test_invalid_specs_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec({**spec(), **change})
