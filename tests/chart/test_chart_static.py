"""The chart on its own (no cluster): lint, rendering, schema, the CRD copy and the README."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import CHART, CRD, ROOT, Helm

CHART_CRD = CHART / "crds" / CRD.name
COMMON_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)

# Every value set to something other than its default, so every branch renders.
ALL_VALUES = """
nameOverride: emo
image: {repository: registry.local:5000/edgemodel-operator, tag: "0.1.0-rc1",
        digest: "sha256:%s", pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
serviceAccount: {create: true, name: emo-sa, annotations: {team: edge}}
watchNamespaces: [site-a, site-b]
accelerators:
  gpu:
    nodeSelector: {nvidia.com/gpu.present: "true"}
    resource: nvidia.com/gpu
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    runtimeClassName: nvidia-cdi
serverImage: "registry.local:5000/edgemodel-server:0.1.0-{accelerator}"
networkPolicy: {enabled: true}
resyncSeconds: 30
replicas: 2
logLevel: DEBUG
healthPort: 9081
builder: {mode: docker, dockerHost: "tcp://buildkitd.edgemodel-system:2375", workSizeLimit: 4Gi}
registry: {url: "registry.local:5000/edgeai", insecure: true, credentialsSecret: registry-push}
metrics:
  enabled: true
  port: 9191
  service: {type: ClusterIP, annotations: {a: b}}
  serviceMonitor: {enabled: true, interval: 15s, scrapeTimeout: 5s, labels: {release: prom}}
prometheusUrl: "http://prometheus-operated.monitoring:9090"
telemetry: {windowSeconds: 120, samplePods: 0}
monitoring:
  podMonitor: {enabled: true, interval: 10s, scrapeTimeout: 5s, labels: {release: prom}}
  prometheusRule: {enabled: true, labels: {release: prom}, latencyObjectiveSeconds: 0.25,
                   errorRateObjective: 0.01, for: 3m, degradedFor: 2m}
  dashboard: {enabled: true, labels: {team: edge}}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
affinity: {nodeAffinity: {}}
priorityClassName: system-cluster-critical
podAnnotations: {note: hello}
podLabels: {tier: edge}
extraEnv: [{name: EXTRA, value: "1"}]
""" % ("a" * 64)


def docs(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def by_kind(rendered: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs(rendered) if d["kind"] == kind]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.fixture(scope="module")
def all_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "all.yaml"
    path.write_text(ALL_VALUES)
    return path


def test_lint_strict(helm: Helm, all_values: Path) -> None:
    out = helm.run("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out
    out = helm.run("lint", "--strict", str(CHART), "--values", str(all_values)).stdout
    assert "0 chart(s) failed" in out


def test_chart_crd_is_a_copy_of_the_source() -> None:
    assert CHART_CRD.exists(), "the chart has no CRD copy; run hack/sync-chart-crds.sh"
    copies = sorted(p.name for p in (CHART / "crds").iterdir())
    sources = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert copies == sources, (
        f"chart crds/ {copies} != crds/ {sources}; run hack/sync-chart-crds.sh"
    )
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), (
        "charts/edgemodel-operator/crds/ differs from crds/ (the source of truth); "
        "run hack/sync-chart-crds.sh and commit the copy"
    )


def test_defaults_render_cluster_wide(helm: Helm) -> None:
    rendered = helm.template()
    kinds = sorted(d["kind"] for d in docs(rendered))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]
    for doc in docs(rendered):
        labels = doc["metadata"]["labels"]
        assert all(k in labels for k in COMMON_LABELS), (doc["kind"], labels)
        assert labels["app.kubernetes.io/version"] == "0.1.0"
    (deployment,) = by_kind(rendered, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "edgemodel-operator:0.1.0"
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["ports"] == [{"name": "health", "containerPort": 8081, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert env_of(deployment) == {
        "EDGEMODEL_NAMESPACES": "",
        "EDGEMODEL_ACCELERATORS": "{}",
        "EDGEMODEL_SERVER_IMAGE": "registry.local:5000/edgeai/edgemodel-server:0.1.0-{accelerator}",
        "EDGEMODEL_RESYNC_SECONDS": "10",
        "EDGEMODEL_LOG_LEVEL": "INFO",
        "EDGEMODEL_ACTIVE_PROBE": "true",
        "EDGEMODEL_NETWORK_POLICY": "false",
        "EDGEMODEL_HEALTH_ADDRESS": "0.0.0.0:8081",
        "EDGEMODEL_TELEMETRY_WINDOW_SECONDS": "60",
        "EDGEMODEL_TELEMETRY_PODS": "5",
        "EDGEMODEL_BUILDER": "registry",
        "EDGEMODEL_REGISTRY_URL": "registry.local:5000/edgeai",
        "EDGEMODEL_REGISTRY_INSECURE": "false",
    }
    (role,) = by_kind(rendered, "ClusterRole")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule


def test_a_site_without_a_registry_is_told_what_to_set(helm: Helm) -> None:
    failed = helm.run("template", "edgemodel", str(CHART), "--set", "registry.url=",
                      check=False)  # fmt: skip
    assert failed.returncode != 0
    assert "set registry.url (the registry `make images` published" in failed.stderr


def test_every_value_renders(helm: Helm, all_values: Path) -> None:
    rendered = helm.template("--values", str(all_values))
    kinds = sorted(d["kind"] for d in docs(rendered))
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PodMonitor",
        "PrometheusRule", "Role", "Role", "Role", "RoleBinding", "RoleBinding", "RoleBinding",
        "Service", "ServiceAccount", "ServiceMonitor",
    ]  # fmt: skip
    (deployment,) = by_kind(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env_of(deployment)["EDGEMODEL_LEADER_ELECTION"] == "edgemodel/edgemodel"
    lease = next(
        r for r in by_kind(rendered, "Role") if r["metadata"]["name"].endswith("-leader-election")
    )
    assert {v for rule in lease["rules"] for v in rule["verbs"]} == {"create", "get", "update"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.local:5000/edgemodel-operator@sha256:" + "a" * 64
    env = env_of(deployment)
    assert env["EDGEMODEL_NAMESPACES"] == "site-a,site-b"
    assert yaml.safe_load(env["EDGEMODEL_ACCELERATORS"])["gpu"]["nodeSelector"] == {
        "nvidia.com/gpu.present": "true"
    }
    assert env["EDGEMODEL_HEALTH_ADDRESS"] == "0.0.0.0:9081"
    assert env["DOCKER_HOST"] == "tcp://buildkitd.edgemodel-system:2375"
    assert (env["EDGEMODEL_BUILDER"], env["EDGEMODEL_BUILD_CONTEXT"]) == (
        "docker", "/opt/edgemodel/images")  # fmt: skip
    assert env["EDGEMODEL_NETWORK_POLICY"] == "true"
    assert env["EDGEMODEL_OPERATOR_POD_LABELS"] == (
        "app.kubernetes.io/instance=edgemodel,app.kubernetes.io/name=emo"
    )
    roles = [r for r in by_kind(rendered, "Role") if r["metadata"]["namespace"] != "edgemodel"]
    assert len(roles) == 2
    assert all("networkpolicies" in {r for rule in role["rules"] for r in rule["resources"]}
               for role in roles)  # fmt: skip
    assert env["EDGEMODEL_REGISTRY_URL"] == "registry.local:5000/edgeai"
    assert env["EDGEMODEL_REGISTRY_INSECURE"] == "true"
    assert env["EDGEMODEL_REGISTRY_AUTH_FILE"] == "/etc/edgemodel/registry/config.json"
    assert env["EXTRA"] == "1"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "registry-auth")
    assert mount == {"name": "registry-auth", "mountPath": "/etc/edgemodel/registry",
                     "readOnly": True}  # fmt: skip
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": 9081,
        "metrics": 9191,
    }
    assert pod["serviceAccountName"] == "emo-sa"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    namespaces = {r["metadata"]["namespace"] for r in by_kind(rendered, "Role")}
    assert namespaces == {"site-a", "site-b", "edgemodel"}  # the watched ones, the Lease's
    (cluster_role,) = by_kind(rendered, "ClusterRole")
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_resources == {"nodes", "customresourcedefinitions", "namespaces"}
    (monitor,) = by_kind(rendered, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert env["EDGEMODEL_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring:9090"
    assert (env["EDGEMODEL_TELEMETRY_WINDOW_SECONDS"], env["EDGEMODEL_TELEMETRY_PODS"]) == (
        "120", "0")  # fmt: skip
    (pods,) = by_kind(rendered, "PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["site-a", "site-b"]}
    assert pods["spec"]["podMetricsEndpoints"][0]["interval"] == "10s"
    (rule,) = by_kind(rendered, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert sorted(alerts) == ["EdgeModelDegraded", "EdgeModelErrorRateHigh",
                              "EdgeModelLatencyHigh", "EdgeModelRolledBack"]  # fmt: skip
    assert alerts["EdgeModelLatencyHigh"]["expr"].endswith("> 0.25")
    assert alerts["EdgeModelErrorRateHigh"]["for"] == "3m"
    assert "{{ $labels.model }}" in alerts["EdgeModelErrorRateHigh"]["annotations"]["summary"]
    (dashboard,) = by_kind(rendered, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["edgemodel-fleet.json"])["uid"] == "edgemodel-fleet"
    for doc in docs(rendered):
        assert all(k in doc["metadata"]["labels"] for k in COMMON_LABELS), doc["kind"]


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("logLevel=TRACE", "logLevel"),
        ("resyncSeconds=0", "resyncSeconds"),
        ("healthPort=70000", "healthPort"),
        ("image.digest=latest", "digest"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("accelerators.tpu.resource=google.com/tpu", "accelerators"),
        ("noSuchValue=1", "noSuchValue"),
        ("prometheusUrl=prometheus:9090", "prometheusUrl"),
        ("monitoring.prometheusRule.errorRateObjective=5", "errorRateObjective"),
    ],
)
def test_schema_rejects_bad_values(helm: Helm, setting: str, complaint: str) -> None:
    proc = helm.run("template", "x", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert complaint in proc.stderr, proc.stderr


def leaf_keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys of every leaf; a map or list value that defaults to empty is a leaf, and
    so is `resources` (one value, a ResourceRequirements)."""
    keys: set[str] = set()
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted != "resources":
            keys |= leaf_keys(value, dotted + ".")
        else:
            keys.add(dotted)
    return keys


def test_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    assert "\n## Values\n" in readme, "the chart README has no '## Values' section"
    section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    table = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))
    missing = sorted(leaf_keys(values) - table)
    assert not missing, f"values missing from the README values table: {missing}"
    unknown = sorted(k for k in table - leaf_keys(values) if k.split(".")[0] not in values)
    assert not unknown, f"README documents values that values.yaml does not have: {unknown}"


def test_values_yaml_comments_every_key() -> None:
    """Every value (each leaf of the README table) has a comment on the line above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    leaves = leaf_keys(yaml.safe_load("\n".join(lines)))
    path: list[tuple[int, str]] = []  # (indent, key) of the enclosing maps
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z]\w*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while path and path[-1][0] >= indent:
            path.pop()
        dotted = ".".join([*(k for _, k in path), match.group(2)])
        path.append((indent, match.group(2)))
        if dotted in leaves:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#"), f"values.yaml line {i + 1} ({dotted}) has no comment"
