#!/usr/bin/env python3
"""A real Prometheus (Debian's package) next to the local edge cluster.

It finds what to scrape through Kubernetes service discovery, with a ServiceAccount token
of its own (read-only: pods, nodes, services, endpoint slices). Debian builds Prometheus
without its kubernetes_sd_configs, so a small bridge here (`monitoring.py discover`, run
by `up`) lists the objects from the API server and hands them to Prometheus's
http_sd_configs with the same __meta_kubernetes_* labels kubernetes_sd would set: the
relabeling below works unchanged on a Prometheus that has Kubernetes discovery built in.
Prometheus scrapes:
- the model servers the operators run, on the real nodes only (pod IPs in 10.244.0.0/16;
  the simulated nodes' pods have no network), with their node's architecture and model;
- operators deployed in the cluster by the chart (their metrics Service);
- operators run as host processes (the demo's, the tests'), which register their
  metrics address as a file in <state>/operators/ (file service discovery).
It evaluates the chart's alerting rules (files/prometheus-rules.yaml, rendered by helm).

    monitoring.py up       start it, or reload its configuration when it runs
    monitoring.py status   print whether it runs, its URL and its targets
    monitoring.py env      print EDGEMODEL_PROMETHEUS_URL=... (for eval)
    monitoring.py register NAME HOST:PORT   scrape a host-run operator (unregister NAME)
    monitoring.py down     stop it and delete its state

Listens on 127.0.0.1:DEVCLUSTER_PORT_BASE+170 (Prometheus) and +171 (the discovery
bridge) only. State (configuration, token, data,
log, pid) lives in <devcluster state>/monitoring/. `up` needs the venv (PyYAML) and helm;
`down`, `status` and `register` only the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "edgemodel-operator"
NAMESPACE = "edgemodel-monitoring"
ACCOUNT = "prometheus"
REAL_POD_IPS = r"10\.244\.\d+\.\d+"  # the real nodes' pod subnets (realnode.CLUSTER_CIDR)
SCRAPE_INTERVAL = "2s"  # short: rollout analysis windows in tests are tens of seconds


class MonitoringError(RuntimeError):
    """A problem a person can act on; printed without a traceback."""


def log(msg: str) -> None:
    print(f"monitoring: {msg}", file=sys.stderr, flush=True)


class Layout:
    def __init__(self, cluster_state: Path, port_base: int) -> None:
        self.cluster_state = cluster_state
        self.port = port_base + 170
        self.discovery_port = port_base + 171
        self.apiserver = f"https://127.0.0.1:{port_base + 43}"

    @property
    def state(self) -> Path:
        return self.cluster_state / "monitoring"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.state / "prometheus.pid"

    @property
    def discovery_pidfile(self) -> Path:
        return self.state / "discovery.pid"

    @property
    def operators(self) -> Path:
        return self.state / "operators"

    @property
    def kubectl(self) -> list[str]:
        return [str(self.cluster_state / "bin" / "kubectl"),
                f"--kubeconfig={self.cluster_state / 'kubeconfig'}"]  # fmt: skip


def running(layout: Layout, pidfile: Path | None = None, name: str = "prometheus") -> int | None:
    try:
        pid = int((pidfile or layout.pidfile).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    argv = [a.decode() for a in cmdline.split(b"\0") if a]
    if name == "prometheus":
        return pid if argv and Path(argv[0]).name == "prometheus" else None
    return pid if "discover" in argv and any(a.endswith("monitoring.py") for a in argv) else None


def http_ok(url: str, method: str = "GET") -> bool:
    try:
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def kubectl(layout: Layout, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([*layout.kubectl, *args], input=stdin, text=True, capture_output=True)
    if proc.returncode != 0:
        raise MonitoringError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


# --- up -------------------------------------------------------------------------------------


def credentials(layout: Layout) -> Path:
    """A ServiceAccount that may read what discovery needs, and a token for it (a year)."""
    rules = [
        {"apiGroups": [""], "resources": ["pods", "nodes", "services", "endpoints"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]},
    ]  # fmt: skip
    objects = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": ACCOUNT, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "edgemodel-monitoring-discovery"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "edgemodel-monitoring-discovery"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "edgemodel-monitoring-discovery"},
         "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}]},
    ]}  # fmt: skip
    kubectl(layout, "apply", "--server-side", "--field-manager=edgemodel-monitoring",
            "-f", "-", stdin=json.dumps(objects))  # fmt: skip
    token = kubectl(layout, "create", "token", ACCOUNT, "-n", NAMESPACE, "--duration=8760h")
    path = layout.state / "token"
    path.write_text(token.strip())
    path.chmod(0o600)
    return path


def rules(layout: Layout) -> Path:
    """The chart's alerting rules, rendered with its default objectives."""
    import yaml  # the venv's: `up` runs there

    helm = subprocess.run([str(ROOT / "hack" / "build-helm.sh")], text=True,
                          capture_output=True)  # fmt: skip
    if helm.returncode != 0:
        raise MonitoringError(f"hack/build-helm.sh failed:\n{helm.stderr[-2000:]}")
    binary = helm.stdout.strip().splitlines()[-1]
    rendered = subprocess.run(
        [binary, "template", "local", str(CHART), "--set", "registry.url=local",
         "--set", "monitoring.prometheusRule.enabled=true",
         "--show-only", "templates/prometheusrule.yaml"],
        text=True, capture_output=True,
    )  # fmt: skip
    if rendered.returncode != 0:
        raise MonitoringError(f"helm template failed: {rendered.stderr.strip()}")
    path = layout.state / "rules.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(rendered.stdout)["spec"], sort_keys=False))
    return path


def discovery(layout: Layout, role: str) -> dict[str, object]:
    """kubernetes_sd_configs' role, through the bridge (Debian's build lacks it)."""
    return {"url": f"http://127.0.0.1:{layout.discovery_port}/{role}", "refresh_interval": "5s"}


def config(layout: Layout, rule_file: Path) -> dict[str, object]:
    keep_real_pods = {"source_labels": ["__meta_kubernetes_pod_ip"], "regex": REAL_POD_IPS,
                      "action": "keep"}  # fmt: skip
    servers = {
        "job_name": "edgemodel-model-servers",
        "http_sd_configs": [discovery(layout, "pod")],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_managed_by"],
             "regex": "edgemodel-operator", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http",
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running",
             "action": "keep"},
            keep_real_pods,
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
            {"source_labels": ["__meta_kubernetes_node_label_kubernetes_io_arch"],
             "target_label": "arch"},
            {"source_labels": ["__meta_kubernetes_node_label_node_kubernetes_io_instance_type"],
             "target_label": "node_model"},
        ],
    }  # fmt: skip
    in_cluster = {
        "job_name": "edgemodel-operator-services",
        "honor_labels": True,  # the operator's series name their EdgeModel's namespace
        "http_sd_configs": [discovery(layout, "endpointslice")],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_part_of",
                               "__meta_kubernetes_service_label_app_kubernetes_io_component"],
             "regex": "edgemodel-operator;metrics", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_endpointslice_address_target_kind"],
             "regex": "Pod", "action": "keep"},
            {"source_labels": ["__address__"], "regex": REAL_POD_IPS + ":.*",
             "action": "keep"},
        ],
    }  # fmt: skip
    on_host = {
        "job_name": "edgemodel-operators",
        "honor_labels": True,
        "file_sd_configs": [{"files": [str(layout.operators / "*.json")],
                             "refresh_interval": "5s"}],
    }  # fmt: skip
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": "5s"},
        "rule_files": [str(rule_file)],
        "scrape_configs": [servers, in_cluster, on_host],
    }  # fmt: skip


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def up(layout: Layout) -> None:
    if not (layout.cluster_state / "kubeconfig").exists():
        raise MonitoringError(f"no cluster at {layout.cluster_state}: run `make cluster-up`")
    binary = shutil.which("prometheus")
    if binary is None:
        raise MonitoringError("prometheus is missing (Debian package prometheus; "
                              "hack/install-deps.sh installs it)")  # fmt: skip
    layout.state.mkdir(parents=True, exist_ok=True)
    layout.operators.mkdir(exist_ok=True)
    token = credentials(layout)
    start_discovery(layout, token)
    path = layout.state / "prometheus.yml"
    path.write_text(json.dumps(config(layout, rules(layout)), indent=2))  # JSON is YAML
    check = subprocess.run(["promtool", "check", "config", str(path)], text=True,
                           capture_output=True)  # fmt: skip
    if check.returncode != 0:
        raise MonitoringError(f"promtool rejected {path}:\n{check.stdout}{check.stderr}")
    pid = running(layout)
    if pid:  # configuration and token renewed: reload
        if not http_ok(f"{layout.url}/-/reload", "POST"):
            raise MonitoringError(f"Prometheus (pid {pid}) did not reload its configuration")
        log(f"Prometheus reloaded (pid {pid}): {layout.url}")
        return
    if not port_free(layout.port):
        raise MonitoringError(f"127.0.0.1:{layout.port} is taken by another program "
                              "(Prometheus uses DEVCLUSTER_PORT_BASE+170)")  # fmt: skip
    with (layout.state / "prometheus.log").open("ab") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={layout.state / 'data'}",
             f"--web.listen-address=127.0.0.1:{layout.port}", "--web.enable-lifecycle",
             "--storage.tsdb.retention.time=2d"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=layout.state,
        )  # fmt: skip
    layout.pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while not http_ok(f"{layout.url}/-/ready"):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (layout.state / "prometheus.log").read_text(errors="replace")[-2000:]
            raise MonitoringError(f"Prometheus did not start; its log:\n{tail}")
        time.sleep(0.25)
    log(f"Prometheus running (pid {proc.pid}): {layout.url}")


# --- the discovery bridge -------------------------------------------------------------------


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _meta(prefix: str, kind: str, values: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        out[f"{prefix}_{kind}_{_sanitize(key)}"] = value
        out[f"{prefix}_{kind}present_{_sanitize(key)}"] = "true"
    return out


class Kubernetes:
    """Lists from the API server with the ServiceAccount's token (standard library)."""

    def __init__(self, layout: Layout, token: Path) -> None:
        self.base = layout.apiserver
        self.token = token
        self.tls = ssl.create_default_context(cafile=str(layout.cluster_state / "pki" / "ca.crt"))

    def items(self, path: str) -> list[dict[str, object]]:
        request = urllib.request.Request(f"{self.base}{path}")
        request.add_header("Authorization", f"Bearer {self.token.read_text().strip()}")
        with urllib.request.urlopen(request, timeout=10, context=self.tls) as resp:
            return list(json.load(resp).get("items") or [])


def pod_groups(kube: Kubernetes) -> list[dict[str, object]]:
    """role pod with attach_metadata node: one target per container port."""
    nodes = {n["metadata"]["name"]: n["metadata"].get("labels") or {}
             for n in kube.items("/api/v1/nodes")}  # fmt: skip
    groups = []
    for pod in kube.items("/api/v1/pods"):
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        ip = status.get("podIP")
        if not ip:
            continue
        node = spec.get("nodeName", "")
        common = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_node_name": node,
            "__meta_kubernetes_pod_uid": meta.get("uid", ""),
            **_meta("__meta_kubernetes_pod", "label", meta.get("labels") or {}),
            **_meta("__meta_kubernetes_pod", "annotation", meta.get("annotations") or {}),
            **_meta("__meta_kubernetes_node", "label", nodes.get(node, {})),
        }
        for container in spec.get("containers") or []:
            for port in container.get("ports") or []:
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **common,
                    "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                }})  # fmt: skip
    return groups


def endpointslice_groups(kube: Kubernetes) -> list[dict[str, object]]:
    """role endpointslice: one target per endpoint address and port, with its Service."""
    services = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s["metadata"].get("labels") or {}
        for s in kube.items("/api/v1/services")
    }
    groups = []
    for piece in kube.items("/apis/discovery.k8s.io/v1/endpointslices"):
        meta = piece["metadata"]
        service = (meta.get("labels") or {}).get("kubernetes.io/service-name", "")
        labels = services.get((meta["namespace"], service), {})
        for endpoint in piece.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            for address in endpoint.get("addresses") or []:
                for port in piece.get("ports") or []:
                    groups.append({"targets": [f"{address}:{port.get('port')}"], "labels": {
                        "__meta_kubernetes_namespace": meta["namespace"],
                        "__meta_kubernetes_endpointslice_name": meta["name"],
                        "__meta_kubernetes_endpointslice_port_name": port.get("name") or "",
                        "__meta_kubernetes_endpointslice_address_target_kind": ref.get("kind", ""),
                        "__meta_kubernetes_endpointslice_address_target_name": ref.get("name", ""),
                        "__meta_kubernetes_service_name": service,
                        **_meta("__meta_kubernetes_service", "label", labels),
                    }})  # fmt: skip
    return groups


def serve_discovery(layout: Layout, token: Path) -> None:
    """The bridge's HTTP server (foreground): /pod and /endpointslice."""
    kube = Kubernetes(layout, token)
    roles = {"/pod": pod_groups, "/endpointslice": endpointslice_groups}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            make = roles.get(self.path.split("?")[0])
            if make is None:
                self.send_error(404)
                return
            try:
                body = json.dumps(make(kube)).encode()
            except (urllib.error.URLError, OSError, ValueError) as err:
                self.send_error(502, f"the API server did not answer: {err}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", layout.discovery_port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def start_discovery(layout: Layout, token: Path) -> None:
    if running(layout, layout.discovery_pidfile, "discover"):
        return  # it reads the token file on every request: a renewed token needs no restart
    if not port_free(layout.discovery_port):
        raise MonitoringError(f"127.0.0.1:{layout.discovery_port} is taken by another program "
                              "(the discovery bridge uses DEVCLUSTER_PORT_BASE+171)")  # fmt: skip
    with (layout.state / "discovery.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "discover"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=layout.state, env=os.environ.copy(),
        )  # fmt: skip
    layout.discovery_pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while not http_ok(f"http://127.0.0.1:{layout.discovery_port}/pod"):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (layout.state / "discovery.log").read_text(errors="replace")[-2000:]
            raise MonitoringError(f"the discovery bridge did not start; its log:\n{tail}")
        time.sleep(0.2)


# --- the rest ------------------------------------------------------------------------------


def register(layout: Layout, name: str, address: str) -> None:
    """Scrape an operator run on this host (its EDGEMODEL_METRICS_ADDRESS)."""
    layout.operators.mkdir(parents=True, exist_ok=True)
    target = [{"targets": [address], "labels": {"operator": name}}]
    tmp = layout.operators / f".{name}.tmp"
    tmp.write_text(json.dumps(target))
    tmp.replace(layout.operators / f"{name}.json")  # atomic: Prometheus never reads half


def unregister(layout: Layout, name: str) -> None:
    (layout.operators / f"{name}.json").unlink(missing_ok=True)


def stop(layout: Layout, pidfile: Path, name: str) -> int | None:
    pid = running(layout, pidfile, name)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while running(layout, pidfile, name) and time.monotonic() < deadline:
            time.sleep(0.1)
        if running(layout, pidfile, name):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    return pid


def down(layout: Layout, quiet: bool = False) -> None:
    pid = stop(layout, layout.pidfile, "prometheus")
    stop(layout, layout.discovery_pidfile, "discover")
    if (layout.cluster_state / "kubeconfig").exists():
        with contextlib.suppress(MonitoringError, OSError):
            kubectl(layout, "delete", "clusterrolebinding,clusterrole",
                    "edgemodel-monitoring-discovery", "--ignore-not-found")  # fmt: skip
            kubectl(layout, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
    shutil.rmtree(layout.state, ignore_errors=True)
    if not quiet:
        log(f"stopped {'Prometheus (pid ' + str(pid) + ')' if pid else 'nothing'}")


def status(layout: Layout) -> int:
    pid = running(layout)
    print(f"prometheus   {'running (pid ' + str(pid) + ')' if pid else 'stopped'}   {layout.url}")
    if not pid:
        return 1
    with urllib.request.urlopen(f"{layout.url}/api/v1/targets?state=active", timeout=5) as r:
        targets = json.load(r)["data"]["activeTargets"]
    for t in targets:
        labels = t["labels"]
        where = labels.get("pod") or labels.get("operator") or t["scrapeUrl"]
        print(f"  {t['scrapePool']:<28} {t['health']:<8} {where}  {t.get('lastError', '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "register",
                                            "unregister", "discover"])  # fmt: skip
    parser.add_argument("args", nargs="*")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    state = Path(os.environ.get("DEVCLUSTER_STATE") or ROOT / ".devcluster").resolve()
    layout = Layout(state, int(os.environ.get("DEVCLUSTER_PORT_BASE", "16400")))
    try:
        if args.command == "up":
            up(layout)
        elif args.command == "down":
            down(layout, args.quiet)
        elif args.command == "discover":
            serve_discovery(layout, layout.state / "token")
        elif args.command == "env":
            print(f"export EDGEMODEL_PROMETHEUS_URL={layout.url}")
        elif args.command == "register" and len(args.args) == 2:
            register(layout, *args.args)
        elif args.command == "unregister" and len(args.args) == 1:
            unregister(layout, args.args[0])
        elif args.command in ("register", "unregister"):
            raise MonitoringError("usage: register NAME HOST:PORT | unregister NAME")
        else:
            return status(layout)
    except MonitoringError as err:
        log(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
