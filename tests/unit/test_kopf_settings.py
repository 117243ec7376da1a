"""What the operator keeps in kopf's diff base: EdgeModels only."""

from __future__ import annotations

import kopf

from edgemodel_operator.handlers.settings import CompactDiffBase


def storage() -> CompactDiffBase:
    return CompactDiffBase(prefix="edgeai.dev", key="last-handled-configuration")


def test_edgemodels_get_a_diff_base() -> None:
    body = kopf.Body({"apiVersion": "edgeai.dev/v1alpha1", "kind": "EdgeModel",
                      "metadata": {"name": "m", "namespace": "ns"},
                      "spec": {"model": {"version": "1"}}})  # fmt: skip
    assert storage().build(body=body)["spec"] == {"model": {"version": "1"}}


def test_other_resources_are_not_copied() -> None:
    """Pods, nodes and workloads have watch handlers only: no diff base is built for them."""
    pod = kopf.Body({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                     "spec": {"nodeName": "n"}})  # fmt: skip
    daemonset = kopf.Body({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {}})
    assert storage().build(body=pod) is None
    assert storage().build(body=daemonset) is None
