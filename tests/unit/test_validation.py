"""spec.model.validation: parsing, the CRD's schema for it, and the Validated condition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.spec import Validation, parse_spec
from edgemodel_operator.reconcile.images import validation_condition

ROOT = Path(__file__).resolve().parents[2]
BASE = {
    "uri": "file:///models/m.onnx",
    "sha256": "a" * 64,
    "version": "1",
}


def spec(validation: Any) -> dict[str, Any]:
    return {
        "model": {**BASE, "validation": validation},
        "targets": [{"name": "cpu", "accelerator": "cpu", "precision": "int4"}],
    }


def test_every_field_is_parsed() -> None:
    parsed = parse_spec(spec({
        "samplesUri": "file:///s.npz", "calibrationRows": 64, "mode": "reference",
        "maxAccuracyDrop": 0.02, "minCosineSimilarity": 0.98, "maxRelativeError": 0.1,
        "outputs": ["probabilities"],
    }))  # fmt: skip
    assert parsed.model.validation == Validation(
        samples_uri="file:///s.npz",
        max_accuracy_drop=0.02,
        calibration_rows=64,
        mode="reference",
        min_cosine_similarity=0.98,
        max_relative_error=0.1,
        outputs=("probabilities",),
    )
    assert parsed.targets[0].precision == "int4"
    bare = parse_spec(spec({})).model.validation
    assert bare == Validation(samples_uri=None, max_accuracy_drop=0.01)


@pytest.mark.parametrize(
    ("validation", "message"),
    [
        ({"mode": "exact"}, "mode must be labels or reference"),
        ({"minCosineSimilarity": 1.5}, "minCosineSimilarity must be a number between 0 and 1"),
        ({"maxRelativeError": True}, "maxRelativeError must be a number"),
        ({"calibrationRows": 8}, "calibrationRows splits samplesUri, which is not set"),
        (
            {
                "samplesUri": "file:///s.npz",
                "calibrationUri": "file:///c.npz",
                "calibrationRows": 8,
            },
            "calibrationUri or calibrationRows, not both",
        ),
        ({"calibrationUri": "s3://bucket/c.npz"}, "calibrationUri must start with"),
        ({"outputs": "probabilities"}, "outputs must be a list"),
        ({"samplesUri": "file:///s.npz", "calibrationRows": 0}, "from 1 to 100000"),
    ],
)
def test_bad_validation_is_refused_with_the_field(validation: Any, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(spec(validation))


def test_crd_documents_and_checks_the_fields() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "edgemodels.edgeai.dev.yaml").read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    model = root["properties"]["spec"]["properties"]["model"]["properties"]
    validation = model["validation"]
    fields = validation["properties"]
    assert set(fields) == {"samplesUri", "calibrationUri", "calibrationRows", "mode",
                           "maxAccuracyDrop", "minCosineSimilarity", "maxRelativeError",
                           "outputs"}  # fmt: skip
    assert all(len(f["description"]) > 40 for f in fields.values())
    assert fields["mode"]["enum"] == ["labels", "reference"]
    rules = [r["rule"] for r in validation["x-kubernetes-validations"]]
    assert "!(has(self.calibrationUri) && has(self.calibrationRows))" in rules
    images = root["properties"]["status"]["properties"]["images"]["items"]["properties"]
    assert {"method", "modelBytes", "latency", "validation"} <= set(images["model"]["properties"])


def test_validated_condition() -> None:
    assert validation_condition(False, None, {}) is None
    status, reason, message = validation_condition(True, None, {"cpu/int8": None}) or ()
    assert (status, reason) == (False, "NoSamples")
    assert "no samplesUri" in message and "did not run" in message
    gate = {"metric": "accuracy", "value": 0.97, "fp32": 0.977, "drop": 0.007, "passed": True}
    passed = validation_condition(True, "file:///s.npz", {
        "cpu/int8": {"validation": gate}, "gpu/fp32": {"method": "copy"},
    })  # fmt: skip
    assert passed == (True, "GatePassed", "cpu/int8 accuracy 0.97 vs fp32 0.977 (drop 0.007)")
    unknown = validation_condition(True, "file:///s.npz", {"cpu/int8": None})
    assert unknown is not None and unknown[:2] == (False, "NotMeasured")
