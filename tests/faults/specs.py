"""Hypothesis strategies for EdgeModels as users write them.

A base spec is valid: every field of the CRD, with values drawn from the edges of what
Kubernetes accepts (label keys with prefixes, 63-character label values, quantities such
as "+.5e3" or "1Ei"), so that a value the schema admits but a Pod spec refuses shows up.
Two in three then get one mistake: a bound crossed, a wrong type, a value outside an enum,
a label or quantity Kubernetes refuses, a name that cannot name a Service."""

from __future__ import annotations

import copy
import re
import string
from typing import Any

from hypothesis import strategies as st

DNS = string.ascii_lowercase + string.digits
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
SUBDOMAIN = r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?){0,3}"
QUANTITY = (r"\+?(([0-9]{1,6}(\.[0-9]{0,3})?)|(\.[0-9]{1,3}))"
            r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,4}))?")  # fmt: skip


def dns_label(max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(DNS + "-", min_size=1, max_size=max_size).filter(
        lambda s: s[0] != "-" and s[-1] != "-"
    )


def optional(**parts: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """An object whose keys are each present or left out."""
    return st.fixed_dictionaries({}, optional=parts)


def label_key() -> st.SearchStrategy[str]:
    generated = st.from_regex(f"({SUBDOMAIN}/)?{LABEL_NAME}", fullmatch=True)
    return st.one_of(st.sampled_from(["edgeai.dev/site", "zone", "kubernetes.io/hostname"]),
                     generated.filter(lambda k: len(k.split("/")[-1]) <= 63))  # fmt: skip


def label_value() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["", "berlin", "v" * 63]),
                     st.from_regex(LABEL_NAME, fullmatch=True))  # fmt: skip


def quantity() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(["500m", "1", "128Mi", "1Gi"]), st.integers(0, 4),
                     st.from_regex(QUANTITY, fullmatch=True))  # fmt: skip


def toleration() -> st.SearchStrategy[dict[str, Any]]:
    effect = optional(effect=st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]))
    return st.one_of(
        st.builds(lambda k, v, e: {"key": k, "operator": "Equal", "value": v, **e},
                  label_key(), label_value(), effect),
        st.builds(lambda k, e: {"key": k, "operator": "Exists", **e},
                  st.one_of(st.just(""), label_key()), effect),
        st.builds(lambda k, s: {"key": k, "effect": "NoExecute", "tolerationSeconds": s},
                  label_key(), st.integers(-5, 600)),
    )  # fmt: skip


def target(name: str, image: str) -> st.SearchStrategy[dict[str, Any]]:
    def combine(accelerator: str, rest: dict[str, Any]) -> dict[str, Any]:
        out = {"name": name, "accelerator": accelerator, "image": image, **rest}
        if out.get("placement") == "perNode":
            out.pop("replicas", None)
        if out.get("fallback") == accelerator:
            out.pop("fallback")
        precision = out.get("precision")
        allowed = {"gpu": ("fp32", "fp16", "int8", "int4"), "npu": ("int8", "fp16", "int4"),
                   "cpu": ("fp32", "int8", "int4")}[accelerator]  # fmt: skip
        if precision is not None and precision not in allowed:
            out.pop("precision")
        return out

    rest = optional(
        precision=st.sampled_from(["fp32", "fp16", "int8", "int4"]),
        placement=st.sampled_from(["replicas", "perNode"]),
        replicas=st.integers(0, 3),
        fallback=st.sampled_from(["cpu", "gpu", "npu"]),
        nodeSelector=st.dictionaries(label_key(), label_value(), max_size=2),
        tolerations=st.lists(toleration(), max_size=2),
        resources=optional(
            requests=st.dictionaries(st.sampled_from(["cpu", "memory"]), quantity(), max_size=2),
            limits=st.dictionaries(st.sampled_from(["memory", "edgeai.dev/npu"]), quantity(),
                                   max_size=2),
        ),
    )  # fmt: skip
    return st.builds(combine, st.sampled_from(["cpu", "cpu", "cpu", "gpu", "npu"]), rest)


def wave() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.builds(lambda p: {"percent": p}, st.integers(1, 100)),
                     st.builds(lambda c: {"count": c}, st.integers(1, 100000)))  # fmt: skip


def spec(image: str) -> st.SearchStrategy[dict[str, Any]]:
    model = st.builds(
        lambda version, extra: {"uri": "https://m.example.com/a/model.onnx",
                                "sha256": "ab" * 32, "version": version, **extra},
        st.one_of(st.sampled_from(["1.0.0", "2024-05", "v1 beta", "v" * 63]),
                  st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                          max_size=12)),
        optional(format=st.just("onnx"), validation=optional(
            samplesUri=st.just("file:///m/s.npz"), maxAccuracyDrop=st.floats(0, 1),
            mode=st.sampled_from(["labels", "reference"]),
            outputs=st.lists(st.text(min_size=1, max_size=8), max_size=2))),
    )  # fmt: skip
    targets = st.lists(dns_label(), min_size=1, max_size=3, unique=True).flatmap(
        lambda names: st.tuples(*(target(n, image) for n in names)).map(list)
    )
    probe = optional(periodSeconds=st.integers(1, 300), timeoutSeconds=st.integers(1, 60),
                     failureThreshold=st.integers(1, 30),
                     startupTimeoutSeconds=st.integers(10, 3600))  # fmt: skip
    rollout = optional(
        progressDeadlineSeconds=st.integers(10, 3600),
        maxUnavailable=st.one_of(st.integers(0, 5), st.sampled_from(["25%", "0%", "100%"])),
        autoRollback=st.booleans(),
        waves=st.lists(wave(), max_size=3),
        canarySelector=st.dictionaries(label_key(), label_value(), max_size=1),
    )  # fmt: skip
    return st.builds(
        lambda m, t, o: {"model": m, "targets": t, **o},
        model, targets, optional(serving=optional(port=st.integers(1024, 65535), probe=probe),
                                 rollout=rollout),
    )  # fmt: skip


# One mistake: (where, the wrong value). "targets.0" is the first target.
MISTAKES: list[tuple[str, Any]] = [
    ("model.uri", "ftp://m.example.com/m.onnx"), ("model.uri", "https://"),
    ("model.sha256", "AB" * 32), ("model.sha256", "ab" * 31), ("model.sha256", "ab" * 32 + "\n"),
    ("model.version", ""), ("model.version", "v" * 64), ("model.version", 1),
    ("model.version", "1.0 \U0001f680"), ("model.version", "1.0\n"),
    ("model.format", "pt"), ("model", "https://m.example.com/m.onnx"),
    ("model.validation.maxAccuracyDrop", 1.5), ("model.validation.mode", "vibes"),
    ("model.validation.calibrationRows", 0), ("model.validation.samplesUri", "s3://x"),
    ("targets", []), ("targets.0.name", "T1"), ("targets.0.name", "t" * 21),
    ("targets.0.name", ""), ("targets.0.accelerator", "tpu"), ("targets.0.precision", "bf16"),
    ("targets.0.placement", "everywhere"), ("targets.0.replicas", -1),
    ("targets.0.replicas", 1001), ("targets.0.replicas", "2"), ("targets.0.fallback", "fpga"),
    ("targets.0.image", "i" * 513), ("targets.0.image", ""), ("targets.0.image", " img:1"),
    ("targets.0.nodeSelector", ["zone"]), ("targets.0.nodeSelector", {"k" * 70: "x"}),
    ("targets.0.nodeSelector", {"a b": "x"}), ("targets.0.nodeSelector", {"/zone": "x"}),
    ("targets.0.nodeSelector", {"zone": "v" * 64}), ("targets.0.nodeSelector", {"zone": "-x"}),
    ("targets.0.tolerations", [{"operator": "In"}]),
    ("targets.0.tolerations", [{"operator": "Equal", "value": "x"}]),
    ("targets.0.tolerations", [{"key": "k", "operator": "Exists", "value": "x"}]),
    ("targets.0.tolerations", [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]),
    ("targets.0.tolerations", [{"key": "a b", "operator": "Exists"}]),
    ("targets.0.resources", {"requests": {"cpu": "abc"}}),
    ("targets.0.resources", {"limits": {"memory": "-1"}}),
    ("targets.0.resources", {"requests": {"memory": -1}}),
    ("serving.port", 80), ("serving.port", 65536),
    ("serving.probe.periodSeconds", 0), ("serving.probe.failureThreshold", 31),
    ("serving.probe.timeoutSeconds", "2"), ("rollout.progressDeadlineSeconds", 5),
    ("rollout.maxUnavailable", -1), ("rollout.maxUnavailable", "25"),
    ("rollout.maxUnavailable", "101%"), ("rollout.maxUnavailable", "x%"),
    ("rollout.autoRollback", "yes"),
    ("rollout.waves", [{"percent": 50, "count": 1}]), ("rollout.waves", [{}]),
    ("rollout.waves", [{"percent": 0}]), ("rollout.waves", [{"count": 1}] * 11),
]  # fmt: skip
BAD_NAMES = ["m.dotted", "Upper", "1digit", "m" * 41, "m-"]


def mistake(value: dict[str, Any], where: str, wrong: Any) -> dict[str, Any]:
    out = copy.deepcopy(value)
    node: Any = out
    *path, last = where.split(".")
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = wrong
    else:
        node[last] = wrong
        if where == "targets.0.replicas":
            node.pop("placement", None)  # the bound, not the placement rule, is tested
    return out


def edgemodel_specs(image: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(metadata.name, spec): valid, or with one mistake in the name or the spec."""
    good_name = dns_label(30).map(lambda s: "m" + s).filter(lambda s: not s.endswith("-"))
    return st.one_of(
        st.tuples(good_name, spec(image)),
        st.builds(lambda n, s, m: (n, mistake(s, *m)), good_name, spec(image),
                  st.sampled_from(MISTAKES)),
        st.tuples(st.sampled_from(BAD_NAMES), spec(image)),
    )  # fmt: skip


def readable(message: str) -> bool:
    """An API server's refusal names the field it refuses."""
    return re.search(r"\b(spec|metadata)\.[A-Za-z]", message) is not None
