"""The paths the operator's requests go to (adapters/rest.py), as the API server serves them."""

import pytest

from edgemodel_operator.adapters.rest import path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("", "v1", "services", "ns", "svc"), "/api/v1/namespaces/ns/services/svc"),
        (("", "v1", "pods", "ns", "p", "status"), "/api/v1/namespaces/ns/pods/p/status"),
        (("", "v1", "events", "ns"), "/api/v1/namespaces/ns/events"),
        (("apps", "v1", "daemonsets", "ns"), "/apis/apps/v1/namespaces/ns/daemonsets"),
        (("coordination.k8s.io", "v1", "leases", "ns", "l"),
         "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"),
        (("edgeai.dev", "v1alpha1", "edgemodels", "ns", "m", "status"),
         "/apis/edgeai.dev/v1alpha1/namespaces/ns/edgemodels/m/status"),
        (("", "v1", "nodes", None, "edge-1"), "/api/v1/nodes/edge-1"),
    ],
)  # fmt: skip
def test_path(args, expected):
    assert path(*args) == expected


def test_a_name_cannot_leave_its_path():
    assert path("", "v1", "secrets", "ns", "a/../b") == "/api/v1/namespaces/ns/secrets/a%2F..%2Fb"
