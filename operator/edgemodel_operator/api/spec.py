"""The EdgeModel spec as typed, immutable values, parsed from what the API server stored.

The CRD schema and its CEL rules reject bad input at the door; parse_spec re-checks the
rules the operator relies on (an older CRD may still be installed) and fills defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from edgemodel_operator.api.accelerators import ACCELERATORS
from edgemodel_operator.api.errors import InvalidSpec

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
# Label keys and values, and quantities, as Kubernetes validates them in a Pod spec.
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_QUANTITY = re.compile(
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


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


def _map(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidSpec(f"{where} must be an object")
    return raw


def _str(raw: Mapping[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise InvalidSpec(f"{where}.{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{where}.{key} must be a non-empty string")
    return value


def _int(raw: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSpec(f"{where}.{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def check_name(name: str) -> None:
    """metadata.name names the targets' Services: a DNS label of at most 40 characters."""
    if len(name) > 40 or not _MODEL_NAME.match(name):
        raise InvalidSpec(
            f"metadata.name {name!r} must be a DNS label of at most 40 characters (lowercase "
            "letters, digits and '-', starting with a letter), because it names the Services "
            "of its targets"
        )


def _selector(raw: Any, where: str) -> dict[str, str]:
    """Labels a node must carry: label keys and values, as in a Pod's nodeSelector."""
    selector = _map(raw, where)
    for key, value in selector.items():
        if not isinstance(key, str) or len(key) > 317 or not _LABEL_KEY.match(key):
            raise InvalidSpec(f"{where}: {key!r} is not a label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise InvalidSpec(f"{where}.{key}: {value!r} is not a label value")
    return {str(k): str(v) for k, v in selector.items()}


def _tolerations(raw: Any, where: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(raw, list):
        raise InvalidSpec(f"{where} must be a list")
    for i, t in enumerate(raw):
        at = f"{where}[{i}]"
        t = _map(t, at)
        key, operator, value = t.get("key", ""), t.get("operator", "Equal"), t.get("value", "")
        if not isinstance(key, str) or (key and (len(key) > 317 or not _LABEL_KEY.match(key))):
            raise InvalidSpec(f"{at}.key {key!r} is not a label key")
        if operator not in TOLERATION_OPERATORS:
            raise InvalidSpec(f"{at}.operator must be Exists or Equal, got {operator!r}")
        if not key and operator != "Exists":
            raise InvalidSpec(f"{at}: a toleration without a key must have operator Exists")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise InvalidSpec(f"{at}.value {value!r} is not a label value")
        if operator == "Exists" and value:
            raise InvalidSpec(f"{at}: a toleration with operator Exists takes no value")
        effect = t.get("effect")
        if effect is not None and effect not in TAINT_EFFECTS:
            raise InvalidSpec(f"{at}.effect must be one of {', '.join(TAINT_EFFECTS)}")
        if "tolerationSeconds" in t and effect != "NoExecute":
            raise InvalidSpec(f"{at}.tolerationSeconds is only for effect NoExecute")
    return tuple(dict(t) for t in raw)


_SUFFIX = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
           "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
           "P": Decimal("1e15"), "E": Decimal("1e18"), "Ki": Decimal(2**10),
           "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
           "Pi": Decimal(2**50), "Ei": Decimal(2**60)}  # fmt: skip


def quantity(amount: int | str) -> Decimal:
    """A Kubernetes quantity's value ("500m" is 0.5, "1Ki" 1024); ValueError if it is none."""
    if isinstance(amount, int):
        return Decimal(amount)
    match = re.match(r"^\+?([0-9]*\.?[0-9]*)(([KMGTPE]i)|[numkMGTPE]|[eE][-+]?[0-9]+)?$", amount)
    if not match or not _QUANTITY.match(amount):
        raise ValueError(amount)
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _SUFFIX:
        return number * _SUFFIX[suffix]
    return number.scaleb(int(suffix[1:]))  # 1e3, 2E-3


def _resources(raw: Any, where: str) -> dict[str, Any]:
    resources = dict(_map(raw, where))
    amounts: dict[str, dict[str, Decimal]] = {}
    for part in ("requests", "limits"):
        for name, amount in _map(resources.get(part), f"{where}.{part}").items():
            ok = (isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0) or (
                isinstance(amount, str) and len(amount) <= 32 and _QUANTITY.match(amount)
            )
            if not ok:
                raise InvalidSpec(
                    f"{where}.{part}.{name} must be a quantity of 0 or more, such as 500m, "
                    f"1 or 512Mi, got {amount!r}"
                )
            device = "/" in name and not name.startswith("hugepages-")
            if device and not re.match(r"^\+?[0-9]+$", str(amount)):
                raise InvalidSpec(f"{where}.{part}.{name}: a device takes a whole number")
            amounts.setdefault(part, {})[name] = quantity(amount)
    for name, request in amounts.get("requests", {}).items():
        limit = amounts.get("limits", {}).get(name)
        if limit is not None and request > limit:
            raise InvalidSpec(f"{where}.requests.{name} may not exceed its limit")
    return resources


def _model(raw: Mapping[str, Any]) -> ModelSource:
    where = "spec.model"
    uri = _str(raw, "uri", where, required=True) or ""
    if not _URI.match(uri):
        raise InvalidSpec(f"{where}.uri must start with http://, https:// or file://, got {uri!r}")
    sha = _str(raw, "sha256", where, required=True) or ""
    if not _SHA256.match(sha):
        raise InvalidSpec(f"{where}.sha256 must be 64 lowercase hex characters")
    version = _str(raw, "version", where, required=True) or ""
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
    s = _map(raw, where)
    uri = _str(s, "uri", where, required=True) or ""
    if not _URI.match(uri):
        raise InvalidSpec(f"{where}.uri must start with http://, https:// or file://, got {uri!r}")
    ref = None
    if "keySecretRef" in s:
        r = _map(s["keySecretRef"], f"{where}.keySecretRef")
        name = _str(r, "name", f"{where}.keySecretRef", required=True) or ""
        key = _str(r, "key", f"{where}.keySecretRef", required=True) or ""
        ref = SecretKeyRef(name, key)
    return ModelSignature(uri=uri, key_secret_ref=ref)


def _fraction(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidSpec(f"{where}.{key} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _validation(raw: Any) -> Validation:
    where = "spec.model.validation"
    v = _map(raw, where)
    samples = _str(v, "samplesUri", where)
    calibration = _str(v, "calibrationUri", where)
    for key, uri in (("samplesUri", samples), ("calibrationUri", calibration)):
        if uri is not None and not _URI.match(uri):
            raise InvalidSpec(f"{where}.{key} must start with http://, https:// or file://")
    rows = None
    if "calibrationRows" in v:
        rows = _int(v, "calibrationRows", where, 1, 1, 100_000)
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
    drop = _fraction(v, "maxAccuracyDrop", where)
    return Validation(
        samples_uri=samples,
        max_accuracy_drop=0.01 if drop is None else drop,
        calibration_uri=calibration,
        calibration_rows=rows,
        mode=mode,
        min_cosine_similarity=_fraction(v, "minCosineSimilarity", where),
        max_relative_error=_fraction(v, "maxRelativeError", where),
        outputs=tuple(outputs),
    )


def _target(raw: Mapping[str, Any], index: int) -> Target:
    where = f"spec.targets[{index}]"
    name = _str(raw, "name", where, required=True) or ""
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
    replicas = _int(raw, "replicas", where, 1, 0, 1000)
    fallback = raw.get("fallback")
    if fallback is not None and (fallback not in ACCELERATORS or fallback == accelerator):
        raise InvalidSpec(f"{where}.fallback must be another accelerator than {accelerator}")
    image = _str(raw, "image", where)
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
        node_selector=_selector(raw.get("nodeSelector"), f"{where}.nodeSelector"),
        tolerations=_tolerations(raw.get("tolerations") or [], f"{where}.tolerations"),
        resources=_resources(raw.get("resources"), f"{where}.resources"),
    )


def parse_spec(raw: Mapping[str, Any]) -> EdgeModelSpec:
    """Typed spec with defaults filled; InvalidSpec names the first field that is wrong."""
    model = _model(_map(raw.get("model"), "spec.model"))
    raw_targets = raw.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise InvalidSpec("spec.targets must list at least one target")
    targets = tuple(_target(_map(t, f"spec.targets[{i}]"), i) for i, t in enumerate(raw_targets))
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidSpec(f"spec.targets: target names must be unique, repeated: {duplicates}")

    serving_raw = _map(raw.get("serving"), "spec.serving")
    probe_raw = _map(serving_raw.get("probe"), "spec.serving.probe")
    pw = "spec.serving.probe"
    probe = Probe(
        period_seconds=_int(probe_raw, "periodSeconds", pw, 5, 1, 300),
        timeout_seconds=_int(probe_raw, "timeoutSeconds", pw, 2, 1, 60),
        failure_threshold=_int(probe_raw, "failureThreshold", pw, 3, 1, 30),
        startup_timeout_seconds=_int(probe_raw, "startupTimeoutSeconds", pw, 300, 10, 3600),
    )
    serving = Serving(
        port=_int(serving_raw, "port", "spec.serving", 8080, 1024, 65535), probe=probe
    )

    rollout_raw = _map(raw.get("rollout"), "spec.rollout")
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
        progress_deadline_seconds=_int(
            rollout_raw, "progressDeadlineSeconds", "spec.rollout", 120, 10, 3600
        ),
        max_unavailable=max_unavailable,
        auto_rollback=auto_rollback,
        waves=_waves(rollout_raw.get("waves") or []),
        success_threshold=_int(rollout_raw, "successThreshold", "spec.rollout", 100, 1, 100),
        canary_selector={
            str(k): str(v)
            for k, v in _map(
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
        w = _map(entry, where)
        if ("percent" in w) == ("count" in w):
            raise InvalidSpec(f"{where} must set exactly one of percent or count")
        if "percent" in w:
            waves.append(Wave(percent=_int(w, "percent", where, 100, 1, 100)))
        else:
            waves.append(Wave(count=_int(w, "count", where, 1, 1, 100000)))
    return tuple(waves)


def _number(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(f"{where}.{key} must be a number, got {value!r}")
    return float(value)


def _analysis(raw: Any) -> Analysis:
    where = "spec.rollout.analysis"
    a = _map(raw, where)
    window = _int(a, "windowSeconds", where, 60, 10, 3600)
    entries = a.get("metrics")
    if not isinstance(entries, list) or not 1 <= len(entries) <= 10:
        raise InvalidSpec(f"{where}.metrics must list 1 to 10 metrics")
    metrics = []
    for i, entry in enumerate(entries):
        at = f"{where}.metrics[{i}]"
        m = _map(entry, at)
        name = _str(m, "name", at, required=True) or ""
        if not _NAME.match(name) or len(name) > 40:
            raise InvalidSpec(f"{at}.name {name!r} must be a DNS label of at most 40 characters")
        kind = m.get("type")
        if kind not in ANALYSIS_TYPES:
            raise InvalidSpec(f"{at}.type must be ErrorRate, LatencyP99 or Query, got {kind!r}")
        low, high = _number(m, "min", at), _number(m, "max", at)
        query = _str(m, "query", at)
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
