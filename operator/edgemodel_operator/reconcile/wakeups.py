"""Which EdgeModels a change in the cluster concerns, so that only those reconcile now.

A pod, workload, Service or EndpointSlice names its model in a label. A node concerns the
models that may run on its accelerator, and only when something placement reads changed
(readiness, cordon, labels, taints, allocatable): the heartbeats every node sends do not
wake anything. A model's own watch event matters when its spec, labels or annotations
changed or it is being deleted: the status the operator writes itself does not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgemodel_operator.api.accelerators import AcceleratorProfile
from edgemodel_operator.api.names import MODEL_LABEL
from edgemodel_operator.reconcile.observed import node_info
from edgemodel_operator.reconcile.plan import Pass

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
