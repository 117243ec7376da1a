"""The EdgeModel spec as typed, immutable values, parsed from what the API server stored.

The CRD schema and its CEL rules reject bad input at the door; parse_spec re-checks the
rules the operator relies on (an older CRD may still be installed) and fills defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator.api.accelerators import ACCELERATORS
from edgemodel_operator.api.errors import InvalidSpec
from edgemodel_operator.api.fields import (
    fraction,
    integer,
    mapping,
    node_selector,
    number,
    resources,
    string,
    tolerations,
)

DEFAULT_PRECISION = {"gpu": "fp16", "npu": "int8", "cpu": "int8"}
ALLOWED_PRECISION = {
    "gpu": ("fp32", "fp16", "int8", "int4"),
    "npu": ("int8", "fp16", "int4"),
    "cpu": ("fp32", "int8", "int4"),
}
VALIDATION_MODES = ("labels", "reference")
PLACEMENTS = ("perNode", "replicas")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URI = re.compile(r"^(https?|file)://[!-~]+$")  # printable ASCII: what goes into a pod spec
_PRINTABLE = re.compile(r"^[ -~]+$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_UNAVAILABLE = re.compile(r"^[0-9]+%?$")
_MODEL_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Validation:
    """spec.model.validation: the gate's samples and thresholds (see optimize.gate)."""

    samples_uri: str | None
    max_accuracy_drop: float = 0.01
    calibration_uri: str | None = None
    calibration_rows: int | None = None
    mode: str | None = None  # labels | reference; None: labels when the samples have y
    min_cosine_similarity: float | None = None
    max_relative_error: float | None = None
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the EdgeModel's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class ModelSignature:
    """spec.model.signature: the publisher's model-signing bundle and, optionally, the
    public key to check it with (else the operator's trusted keys)."""

    uri: str
    key_secret_ref: SecretKeyRef | None = None


@dataclass(frozen=True)
class ModelSource:
    uri: str
    sha256: str
    version: str
    format: str = "onnx"
    validation: Validation | None = None
    signature: ModelSignature | None = None


@dataclass(frozen=True)
class Target:
    name: str
    accelerator: str
    precision: str
    placement: str = "replicas"
    replicas: int = 1
    fallback: str | None = None
    image: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    resources: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    period_seconds: int = 5
    timeout_seconds: int = 2
    failure_threshold: int = 3
    startup_timeout_seconds: int = 300


@dataclass(frozen=True)
class Serving:
    port: int = 8080
    probe: Probe = Probe()


@dataclass(frozen=True)
class Wave:
    """A step of a fleet rollout: a share of the nodes (percent) or a number of them."""

    percent: int | None = None
    count: int | None = None


ANALYSIS_TYPES = ("ErrorRate", "LatencyP99", "Query")
# Placeholders a query may use; the operator fills them in for each target it checks.
QUERY_PLACEHOLDERS = ("$namespace", "$edgemodel", "$target", "$revision", "$window")


@dataclass(frozen=True)
class AnalysisMetric:
    """One check of rollout.analysis: ErrorRate (share of inference requests answered
    with an error, 0..1), LatencyP99 (seconds) or Query (any PromQL returning numbers)."""

    name: str
    type: str
    max: float | None = None
    min: float | None = None
    query: str | None = None


@dataclass(frozen=True)
class Analysis:
    """spec.rollout.analysis: Prometheus checks of each wave's stabilization window."""

    metrics: tuple[AnalysisMetric, ...]
    window_seconds: int = 60  # the range the built-in queries rate over; the window's minimum


@dataclass(frozen=True)
class Rollout:
    progress_deadline_seconds: int = 120
    max_unavailable: int | str = "25%"
    auto_rollback: bool = True
    waves: tuple[Wave, ...] = ()  # perNode targets move node by node, wave by wave
    canary_selector: Mapping[str, str] = field(default_factory=dict)  # first-wave nodes
    analysis: Analysis | None = None  # metric gates evaluated through Prometheus
    success_threshold: int = 100  # percent of a wave's available nodes that must succeed

    @property
    def paced(self) -> bool:
        """The operator moves perNode targets node by node itself (OnDelete DaemonSets):
        in waves, or to hold failing nodes back under a success threshold."""
        return bool(self.waves) or self.success_threshold < 100


@dataclass(frozen=True)
class EdgeModelSpec:
    model: ModelSource
    targets: tuple[Target, ...]
    serving: Serving = Serving()
    rollout: Rollout = Rollout()


def check_name(name: str) -> None:
    """metadata.name names the targets' Services: a DNS label of at most 40 characters."""
    if len(name) > 40 or not _MODEL_NAME.match(name):
        raise InvalidSpec(
            f"metadata.name {name!r} must be a DNS label of at most 40 characters (lowercase "
            "letters, digits and '-', starting with a letter), because it names the Services "
            "of its targets"
        )


def _model(raw: Mapping[str, Any]) -> ModelSource:
    where = "spec.model"
    uri = string(raw, "uri", where, required=True) or ""
    if not _URI.match(uri):
        raise InvalidSpec(f"{where}.uri must start with http://, https:// or file://, got {uri!r}")
    sha = string(raw, "sha256", where, required=True) or ""
    if not _SHA256.match(sha):
        raise InvalidSpec(f"{where}.sha256 must be 64 lowercase hex characters")
    version = string(raw, "version", where, required=True) or ""
    if len(version) > 63 or not _PRINTABLE.match(version):
        raise InvalidSpec(f"{where}.version must be at most 63 printable ASCII characters")
    fmt = raw.get("format", "onnx")
    if fmt != "onnx":
        raise InvalidSpec(f"{where}.format {fmt!r} is not supported; use onnx")
    validation = _validation(raw["validation"]) if "validation" in raw else None
    signature = _signature(raw["signature"]) if "signature" in raw else None
    return ModelSource(uri=uri, sha256=sha, version=version, format=fmt, validation=validation,
                       signature=signature)  # fmt: skip


def _signature(raw: Any) -> ModelSignature:
    where = "spec.model.signature"
    s = mapping(raw, where)
    uri = string(s, "uri", where, required=True) or ""
    if not _URI.match(uri):
        raise InvalidSpec(f"{where}.uri must start with http://, https:// or file://, got {uri!r}")
    ref = None
    if "keySecretRef" in s:
        r = mapping(s["keySecretRef"], f"{where}.keySecretRef")
        name = string(r, "name", f"{where}.keySecretRef", required=True) or ""
        key = string(r, "key", f"{where}.keySecretRef", required=True) or ""
        ref = SecretKeyRef(name, key)
    return ModelSignature(uri=uri, key_secret_ref=ref)


def _validation(raw: Any) -> Validation:
    where = "spec.model.validation"
    v = mapping(raw, where)
    samples = string(v, "samplesUri", where)
    calibration = string(v, "calibrationUri", where)
    for key, uri in (("samplesUri", samples), ("calibrationUri", calibration)):
        if uri is not None and not _URI.match(uri):
            raise InvalidSpec(f"{where}.{key} must start with http://, https:// or file://")
    rows = None
    if "calibrationRows" in v:
        rows = integer(v, "calibrationRows", where, 1, 1, 100_000)
        if calibration is not None:
            raise InvalidSpec(f"{where}: set calibrationUri or calibrationRows, not both")
        if samples is None:
            raise InvalidSpec(f"{where}.calibrationRows splits samplesUri, which is not set")
    mode = v.get("mode")
    if mode is not None and mode not in VALIDATION_MODES:
        raise InvalidSpec(f"{where}.mode must be labels or reference, got {mode!r}")
    outputs = v.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, str) and o for o in outputs):
        raise InvalidSpec(f"{where}.outputs must be a list of output names")
    drop = fraction(v, "maxAccuracyDrop", where)
    return Validation(
        samples_uri=samples,
        max_accuracy_drop=0.01 if drop is None else drop,
        calibration_uri=calibration,
        calibration_rows=rows,
        mode=mode,
        min_cosine_similarity=fraction(v, "minCosineSimilarity", where),
        max_relative_error=fraction(v, "maxRelativeError", where),
        outputs=tuple(outputs),
    )


def _target(raw: Mapping[str, Any], index: int) -> Target:
    where = f"spec.targets[{index}]"
    name = string(raw, "name", where, required=True) or ""
    if not _NAME.match(name) or len(name) > 20:
        raise InvalidSpec(f"{where}.name {name!r} must be a DNS label of at most 20 characters")
    accelerator = raw.get("accelerator")
    if accelerator not in ACCELERATORS:
        raise InvalidSpec(f"{where}.accelerator must be gpu, npu or cpu, got {accelerator!r}")
    precision = raw.get("precision") or DEFAULT_PRECISION[accelerator]
    if precision not in ALLOWED_PRECISION[accelerator]:
        allowed = " or ".join(ALLOWED_PRECISION[accelerator])
        raise InvalidSpec(f"{where}: {accelerator} targets take {allowed}, not {precision}")
    placement = raw.get("placement", "replicas")
    if placement not in PLACEMENTS:
        raise InvalidSpec(f"{where}.placement must be perNode or replicas, got {placement!r}")
    if placement == "perNode" and "replicas" in raw:
        raise InvalidSpec(f"{where}.replicas may only be set when placement is replicas")
    replicas = integer(raw, "replicas", where, 1, 0, 1000)
    fallback = raw.get("fallback")
    if fallback is not None and (fallback not in ACCELERATORS or fallback == accelerator):
        raise InvalidSpec(f"{where}.fallback must be another accelerator than {accelerator}")
    image = string(raw, "image", where)
    if image is not None and not re.match(r"^[!-~]+$", image):
        raise InvalidSpec(f"{where}.image must be printable ASCII without spaces, got {image!r}")
    return Target(
        name=name,
        accelerator=accelerator,
        precision=precision,
        placement=placement,
        replicas=replicas,
        fallback=fallback,
        image=image,
        node_selector=node_selector(raw.get("nodeSelector"), f"{where}.nodeSelector"),
        tolerations=tolerations(raw.get("tolerations") or [], f"{where}.tolerations"),
        resources=resources(raw.get("resources"), f"{where}.resources"),
    )


def parse_spec(raw: Mapping[str, Any]) -> EdgeModelSpec:
    """Typed spec with defaults filled; InvalidSpec names the first field that is wrong."""
    model = _model(mapping(raw.get("model"), "spec.model"))
    raw_targets = raw.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise InvalidSpec("spec.targets must list at least one target")
    targets = tuple(_target(mapping(t, f"spec.targets[{i}]"), i) for i, t in enumerate(raw_targets))
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidSpec(f"spec.targets: target names must be unique, repeated: {duplicates}")

    serving_raw = mapping(raw.get("serving"), "spec.serving")
    probe_raw = mapping(serving_raw.get("probe"), "spec.serving.probe")
    pw = "spec.serving.probe"
    probe = Probe(
        period_seconds=integer(probe_raw, "periodSeconds", pw, 5, 1, 300),
        timeout_seconds=integer(probe_raw, "timeoutSeconds", pw, 2, 1, 60),
        failure_threshold=integer(probe_raw, "failureThreshold", pw, 3, 1, 30),
        startup_timeout_seconds=integer(probe_raw, "startupTimeoutSeconds", pw, 300, 10, 3600),
    )
    serving = Serving(
        port=integer(serving_raw, "port", "spec.serving", 8080, 1024, 65535), probe=probe
    )

    rollout_raw = mapping(raw.get("rollout"), "spec.rollout")
    max_unavailable = rollout_raw.get("maxUnavailable", "25%")
    if isinstance(max_unavailable, bool) or not (
        (isinstance(max_unavailable, int) and max_unavailable >= 0)
        or (isinstance(max_unavailable, str) and _MAX_UNAVAILABLE.match(max_unavailable))
    ):
        raise InvalidSpec("spec.rollout.maxUnavailable must be a count or a percentage like 25%")
    if isinstance(max_unavailable, str) and int(max_unavailable.rstrip("%")) > 100:
        raise InvalidSpec("spec.rollout.maxUnavailable may be at most 100%")
    auto_rollback = rollout_raw.get("autoRollback", True)
    if not isinstance(auto_rollback, bool):
        raise InvalidSpec("spec.rollout.autoRollback must be true or false")
    rollout = Rollout(
        progress_deadline_seconds=integer(
            rollout_raw, "progressDeadlineSeconds", "spec.rollout", 120, 10, 3600
        ),
        max_unavailable=max_unavailable,
        auto_rollback=auto_rollback,
        waves=_waves(rollout_raw.get("waves") or []),
        success_threshold=integer(rollout_raw, "successThreshold", "spec.rollout", 100, 1, 100),
        canary_selector={
            str(k): str(v)
            for k, v in mapping(
                rollout_raw.get("canarySelector"), "spec.rollout.canarySelector"
            ).items()
        },
        analysis=_analysis(rollout_raw["analysis"]) if "analysis" in rollout_raw else None,
    )
    return EdgeModelSpec(model=model, targets=targets, serving=serving, rollout=rollout)


def _waves(raw: Any) -> tuple[Wave, ...]:
    if not isinstance(raw, list) or len(raw) > 10:
        raise InvalidSpec("spec.rollout.waves must be a list of at most 10 waves")
    waves = []
    for i, entry in enumerate(raw):
        where = f"spec.rollout.waves[{i}]"
        w = mapping(entry, where)
        if ("percent" in w) == ("count" in w):
            raise InvalidSpec(f"{where} must set exactly one of percent or count")
        if "percent" in w:
            waves.append(Wave(percent=integer(w, "percent", where, 100, 1, 100)))
        else:
            waves.append(Wave(count=integer(w, "count", where, 1, 1, 100000)))
    return tuple(waves)


def _analysis(raw: Any) -> Analysis:
    where = "spec.rollout.analysis"
    a = mapping(raw, where)
    window = integer(a, "windowSeconds", where, 60, 10, 3600)
    entries = a.get("metrics")
    if not isinstance(entries, list) or not 1 <= len(entries) <= 10:
        raise InvalidSpec(f"{where}.metrics must list 1 to 10 metrics")
    metrics = []
    for i, entry in enumerate(entries):
        at = f"{where}.metrics[{i}]"
        m = mapping(entry, at)
        name = string(m, "name", at, required=True) or ""
        if not _NAME.match(name) or len(name) > 40:
            raise InvalidSpec(f"{at}.name {name!r} must be a DNS label of at most 40 characters")
        kind = m.get("type")
        if kind not in ANALYSIS_TYPES:
            raise InvalidSpec(f"{at}.type must be ErrorRate, LatencyP99 or Query, got {kind!r}")
        low, high = number(m, "min", at), number(m, "max", at)
        query = string(m, "query", at)
        if (kind == "Query") != (query is not None):
            raise InvalidSpec(f"{at}.query must be set for type Query, and only for it")
        if low is None and high is None:
            raise InvalidSpec(f"{at} must set max, min or both")
        if low is not None and high is not None and low > high:
            raise InvalidSpec(f"{at}: min {low:g} is above max {high:g}")
        if kind == "ErrorRate" and any(v is not None and not 0 <= v <= 1 for v in (low, high)):
            raise InvalidSpec(f"{at}: an ErrorRate threshold is a share from 0 to 1")
        metrics.append(AnalysisMetric(name, kind, high, low, query))
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise InvalidSpec(f"{where}.metrics: names must be unique")
    return Analysis(metrics=tuple(metrics), window_seconds=window)
