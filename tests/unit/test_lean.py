"""What the indices keep of an object: no managedFields, and one string object for the keys
and short values that thousands of pods and workloads repeat."""

from __future__ import annotations

import json
from typing import Any

from edgemodel_operator.reconcile.observed import lean


def decoded(name: str) -> dict[str, Any]:
    """A pod as a watch gives it: every decode makes its own strings."""
    pod = {
        "metadata": {"name": name, "labels": {"edgeai.dev/target": "cpu-int8"},
                     "managedFields": [{"manager": "kubelet"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "message": "x" * 200},
    }  # fmt: skip
    return dict(json.loads(json.dumps(pod)))


def test_lean_drops_managed_fields_and_keeps_the_rest_equal() -> None:
    pod = decoded("a")
    kept = lean(pod)
    assert "managedFields" not in kept["metadata"]
    del pod["metadata"]["managedFields"]
    assert kept == pod


def test_pods_share_their_repeated_keys_and_values() -> None:
    a, b = lean(decoded("a")), lean(decoded("b"))
    label_a, label_b = (p["metadata"]["labels"]["edgeai.dev/target"] for p in (a, b))
    assert label_a is label_b
    key_a, key_b = (next(iter(p["metadata"]["labels"])) for p in (a, b))
    assert key_a is key_b
    cond_a, cond_b = (p["status"]["conditions"][0]["status"] for p in (a, b))
    assert cond_a is cond_b
    assert a["status"]["message"] is not b["status"]["message"], "long strings are copied"


def test_a_str_subclass_is_kept_as_it_is() -> None:
    class Name(str):
        pass

    kept = lean({"metadata": {"name": Name("a")}})
    assert kept["metadata"]["name"] == "a"


def test_a_workloads_pod_template_spec_is_kept_packed_and_reads_back_equal() -> None:
    import copy
    import pickle
    import sys

    from edgemodel_operator.reconcile.observed import Packed

    pod_spec = {"containers": [{"name": "server", "image": "srv@sha256:1", "ports": [
        {"containerPort": 8000, "protocol": "TCP"}]}], "dnsPolicy": "ClusterFirst"}  # fmt: skip
    workload = {"kind": "Deployment", "metadata": {"name": "w", "managedFields": []},
                "spec": {"replicas": 2, "template": {"metadata": {"labels": {"a": "b"}},
                                                     "spec": pod_spec}}}  # fmt: skip
    kept = lean(workload)
    packed = kept["spec"]["template"]["spec"]
    assert isinstance(packed, Packed)
    assert packed == pod_spec and dict(packed) == pod_spec
    assert packed.get("containers")[0]["image"] == "srv@sha256:1"
    assert kept["spec"]["template"]["metadata"] == {"labels": {"a": "b"}}, "read per pass"
    assert copy.deepcopy(packed) == pod_spec and pickle.loads(pickle.dumps(packed)) == pod_spec
    assert lean(kept)["spec"]["template"]["spec"] == pod_spec, "leaning twice is the same"
    assert json.loads(json.dumps(pod_spec)) == packed.decoded()
    assert sys.getsizeof(packed) + sys.getsizeof(packed._text) < 400
    assert workload["spec"]["template"]["spec"] is pod_spec, "the object itself is untouched"


def test_a_child_is_indexed_packed_whole_and_observed_decoded() -> None:
    import asyncio

    import kopf

    from edgemodel_operator.handlers.edgemodel import children_index
    from edgemodel_operator.handlers.passes import observe
    from edgemodel_operator.reconcile.observed import Packed

    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "m-cpu", "namespace": "ns", "managedFields": [{"m": 1}],
                            "labels": {"app.kubernetes.io/managed-by": "edgemodel-operator",
                                       "edgeai.dev/edgemodel": "m"}},
               "spec": {"ports": [{"port": 8000}]}}  # fmt: skip
    kept = asyncio.run(children_index("Service")(body=kopf.Body(json.loads(json.dumps(service)))))
    assert list(kept) == [("ns", "m")]
    assert isinstance(kept["ns", "m"], Packed) and "managedFields" not in repr(kept)
    index = {
        "nodes_index": {},
        "pods_index": {},
        "services_index": {("ns", "m"): [kept["ns", "m"]]},
    }
    observed = observe(("ns", "m"), index)
    del service["metadata"]["managedFields"]
    assert observed.children == [service]
    child = observed.children[0]
    assert type(child) is dict and type(child["spec"]) is dict  # decoded once, plain dicts
