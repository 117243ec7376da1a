"""Whether the pods in the indices agree with what the model's workloads, read now, count.

A rollback is confirmed against the API server first, since the indices lag while a watch
is down. Where the evidence names no node or many (the progress deadline, a fleet-wide
crash loop), reading every pod of a 1,500-node fleet costs seconds; the workloads' status
counts (pods, updated, Ready) cost one small read. When those counts match the indices,
the indices are current enough to decide on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgemodel_operator.api.names import REVISION_ANNOTATION, TARGET_LABEL
from edgemodel_operator.reconcile.health import pod_ready, pod_revision
from edgemodel_operator.reconcile.observed import Observed

Counts = tuple[int, int, int]  # running, of the current template's revision, Ready


def counted(workload: Mapping[str, Any]) -> Counts | None:
    """The workload's own counts (a DaemonSet counts nodes, a Deployment pods); None while
    its controller has not caught up with its latest spec."""
    meta, status = workload.get("metadata") or {}, workload.get("status") or {}
    if "generation" not in meta or status.get("observedGeneration") != meta["generation"]:
        return None
    if workload.get("kind") == "DaemonSet":
        nodes = status.get("currentNumberScheduled", 0) + status.get("numberMisscheduled", 0)
        return nodes, status.get("updatedNumberScheduled", 0), status.get("numberReady", 0)
    return (
        status.get("replicas", 0),
        status.get("updatedReplicas", 0),
        status.get("readyReplicas", 0),
    )


def seen(workload: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Counts:
    """The same counts over the indices' pods of the workload's target. A DaemonSet's
    controller counts a node by its oldest pod (during a surge the old one runs beside the
    new), so the pods are counted that way too."""
    template = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
    revision = (template.get("annotations") or {}).get(REVISION_ANNOTATION)
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if workload.get("kind") == "DaemonSet":
        live = list(_oldest_per_node(live))
    updated = sum(1 for p in live if revision is not None and pod_revision(p) == revision)
    return len(live), updated, sum(1 for p in live if pod_ready(p))


def _oldest_per_node(pods: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    oldest: dict[str, tuple[tuple[str, str], Mapping[str, Any]]] = {}
    for pod in pods:
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        meta = pod.get("metadata") or {}
        age = (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))
        if node and (node not in oldest or age < oldest[node][0]):
            oldest[node] = (age, pod)
    return (pod for _, pod in oldest.values())


def indices_agree(workloads: Sequence[Mapping[str, Any]], observed: Observed) -> bool:
    """Every workload's counts, read now, match the indices' pods of its target."""
    workloads = [w for w in workloads if w.get("kind") in ("Deployment", "DaemonSet")]
    if not workloads:
        return False
    for workload in workloads:
        target = ((workload.get("metadata") or {}).get("labels") or {}).get(TARGET_LABEL)
        expected = counted(workload)
        if target is None or expected is None:
            return False
        if expected != seen(workload, observed.pods_of(str(target))):
            return False
    return True
