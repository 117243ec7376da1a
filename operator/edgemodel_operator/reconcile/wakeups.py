"""Which EdgeModels a change in the cluster concerns, so that only those reconcile now.

A pod, workload or Service names its model in a label. A node concerns the
models that may run on its accelerator, and only when something placement reads changed
(readiness, cordon, labels, taints, allocatable): the heartbeats every node sends do not
wake anything. A model's own watch event matters when its spec, labels or annotations
changed or it is being deleted: the status the operator writes itself does not.

A woken model pauses briefly before its pass to gather a burst of changes into one; not
when a pod shows a gate's failing evidence while a rollout is under way, nor when the
wait ended by the clock (a deadline falling due)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgemodel_operator.api.accelerators import AcceleratorProfile
from edgemodel_operator.api.names import MODEL_LABEL
from edgemodel_operator.reconcile.health import crash, lost
from edgemodel_operator.reconcile.observed import node_info
from edgemodel_operator.reconcile.plan import Pass
from edgemodel_operator.reconcile.probes import probe_failure

Key = tuple[str, str]  # (namespace, EdgeModel name)


def owner_key(namespace: str, labels: Mapping[str, str]) -> Key | None:
    model = labels.get(MODEL_LABEL)
    return (namespace, model) if model else None


def node_signature(node: Mapping[str, Any]) -> tuple[Any, ...]:
    """What placement reads from a node; equal signatures place the same."""
    info = node_info(node)
    return (
        bool(info.unavailable),
        info.schedulable,
        tuple(sorted(info.labels.items())),
        tuple(sorted(repr(sorted(t.items())) for t in info.taints)),
        tuple(sorted(info.allocatable.items())),
    )


def node_accelerators(
    labels: Mapping[str, str], profiles: Mapping[str, AcceleratorProfile]
) -> frozenset[str]:
    """The accelerators whose node selector the node's labels match."""
    return frozenset(
        name
        for name, profile in profiles.items()
        if all(labels.get(k) == v for k, v in profile.node_selector.items())
    )


def selected(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Whether a model's labels match the operator's selector (an empty one: all)."""
    return all(labels.get(k) == v for k, v in selector.items())


def model_essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of an EdgeModel calls for a reconcile when it changes: not its status."""
    meta = body.get("metadata") or {}
    return (
        meta.get("generation"),
        bool(meta.get("deletionTimestamp")),
        tuple(sorted((meta.get("labels") or {}).items())),
        tuple(sorted((meta.get("annotations") or {}).items())),
    )


def pause(debounce: float, last_cpu: float) -> float:
    """How long a woken model waits before its pass, so that a burst of changes (a
    DaemonSet's 1,500 pods turning Ready) is one pass, and a model whose passes take much
    CPU (a large fleet) spends at most about a third of the time in them. Time spent
    waiting for the API server does not count: it costs this process nothing."""
    return max(debounce, 2.0 * last_cpu)


IDLE_PASSES_PER_SECOND = 20.0  # the settled models' timer passes, all together
IDLE_WAIT_CAP_SECONDS = 60.0


def failing(pod: Mapping[str, Any]) -> bool:
    """The pod shows a gate's failing evidence: a container in a crash loop (or an image
    that cannot be pulled), a failed active probe, or readiness lost while it runs."""
    waiting_only = 1 << 30  # restarts alone do not count here: the gate counts them
    return bool(crash(pod, waiting_only) or probe_failure(pod) or lost(pod, None))


def pause_before_pass(
    pause: float, woken: bool, failing_pod: bool, rolling: bool, eager_last: bool
) -> float:
    """How long a model waits after its wait ends: the pause that gathers a burst, or none
    when the clock ended the wait (a deadline: no burst to gather), or a pod's failing
    evidence woke a model whose rollout is under way (acted on at once, but at most every
    other pass, so that a fleet's crash loop cannot keep passes running back to back)."""
    if not woken:
        return 0.0
    if failing_pod and rolling and not eager_last:
        return 0.0
    return pause


def settled(done: Pass) -> bool:
    """The pass found the model Ready on its stable revision and had nothing to do: no
    write, no Event, no deadline or window to look at again, no build under way."""
    return (done.action == "Steady" and not (done.apply or done.delete or done.events)
            and done.recheck_seconds is None and done.status.get("phase") == "Ready")  # fmt: skip


def safety_net(resync: float, models: int) -> float:
    """How long a settled model waits for a wake-up before its next pass: the resync, or
    longer once the settled models together would pass more than IDLE_PASSES_PER_SECOND
    times a second (a thousand models each passing every 10 s keep a core busy finding
    nothing to do), up to a minute. A change to the model, its pods, workloads or nodes
    still wakes it at once."""
    return max(resync, min(IDLE_WAIT_CAP_SECONDS, models / IDLE_PASSES_PER_SECOND))
