"""needs_apply: API-server defaults are not drift, hand edits are."""

from __future__ import annotations

import copy
from typing import Any

from test_workloads import CASES, build

from edgemodel_operator.reconcile.drift import covers, needs_apply


def as_stored(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns: defaults added, quantities normalised, status."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="x", generation=1, resourceVersion="7")
    pod = live["spec"]["template"]["spec"]
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default")
    pod["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    pod["containers"][0]["readinessProbe"]["successThreshold"] = 1
    if "resources" in pod["containers"][0]:
        pod["containers"][0]["resources"]["requests"]["cpu"] = "0.25"
    live["status"] = {"readyReplicas": 2}
    return live


def test_defaults_and_normalised_quantities_are_not_drift() -> None:
    desired = build(CASES["deployment-cpu"])
    assert not needs_apply(desired, as_stored(desired))


def test_missing_or_edited_children_are_drift() -> None:
    desired = build(CASES["deployment-cpu"])
    assert needs_apply(desired, None)
    scaled = as_stored(desired)
    scaled["spec"]["replicas"] = 5
    assert needs_apply(desired, scaled)
    retagged = as_stored(desired)
    retagged["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    assert needs_apply(desired, retagged)
    relabeled = as_stored(desired)
    del relabeled["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert needs_apply(desired, relabeled)
    old = as_stored(build({**CASES["deployment-cpu"], "replicas": 3}))
    assert needs_apply(desired, old)


def test_covers_lists_and_empties() -> None:
    assert covers([{"a": 1, "b": 2}], [{"a": 1}])
    assert not covers([{"a": 1}, {"a": 2}], [{"a": 1}])
    assert covers(None, {}) and covers(None, [])


def test_fields_the_api_server_omits_when_empty_are_no_drift() -> None:
    from edgemodel_operator.reconcile.drift import covers

    desired = {"tolerations": [{"key": "", "operator": "Exists"}]}
    assert covers({"tolerations": [{"operator": "Exists"}]}, desired)
    assert not covers({"tolerations": [{"operator": "Equal"}]}, desired)


def test_the_indices_packed_copies_decide_drift_as_the_objects_do() -> None:
    from edgemodel_operator.reconcile.observed import Packed, lean

    desired = build(CASES["deployment-cpu"])
    retagged = as_stored(desired)
    retagged["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    for live, drifted in ((as_stored(desired), False), (retagged, True)):
        kept = lean(live)
        assert isinstance(kept["spec"]["template"]["spec"], Packed)
        assert needs_apply(desired, kept) is drifted
