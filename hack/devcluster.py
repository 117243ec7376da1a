#!/usr/bin/env python3
"""A real local edge cluster: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK simulating a fleet of GPU, NPU and CPU nodes, and real worker nodes
(kubelet + containerd, see realnode.py) that pull images from a local registry and run
them for real.

The control plane binds to 127.0.0.1; a real node's kubelet listens on its pod bridge
only. Standard library only, so it runs before any venv.

    devcluster.py up [--fleet gpu=3,npu=3,cpu=6] [--real-nodes 1]
                                                    start (or reuse) and create the fleet
    devcluster.py status                            print what runs and the nodes (exit 0;
                                                    1: not running; 3: a real node is down)
    devcluster.py down                              stop everything and delete the state
    devcluster.py restart-apiserver [--down-seconds N]
                                                    restart only the API server (fault tests)

State (PKI, kubeconfig, logs, pids) lives in --state-dir (default .devcluster/);
the admin kubeconfig is <state-dir>/kubeconfig.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import imagekit
import realnode

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FLEET = "gpu=3,npu=3,cpu=6"
NPU_SLOTS = 4
SERVICE_CIDR = "10.96.0.0/16"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterError(RuntimeError):
    """A problem a person can act on; printed without a traceback."""


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(base + 79, base + 80, base + 43, base + 57, base + 59, base + 47)

    def named(self) -> dict[str, int]:
        return {
            "etcd": self.etcd,
            "etcd peer": self.etcd_peer,
            "kube-apiserver": self.apiserver,
            "kube-controller-manager": self.controller_manager,
            "kube-scheduler": self.scheduler,
            "kwok": self.kwok,
        }


@dataclass(frozen=True)
class Layout:
    state: Path
    bin_dir: Path
    kwok_dir: Path
    etcd_dir: Path
    ports: Ports
    port_base: int = 16400
    # How long a node may miss its heartbeat before the node lifecycle controller calls it
    # NotReady and marks its pods not Ready (kube-controller-manager's default: 50 s).
    node_grace_seconds: int = 50

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def etcd_data(self) -> Path:
        # etcd on tmpfs when there is one: fsync on a shared disk makes every write slow.
        shm = Path("/dev/shm")
        key = hashlib.sha256(str(self.state.resolve()).encode()).hexdigest()[:10]
        if shm.is_dir() and os.access(shm, os.W_OK):
            return shm / f"edgemodel-devcluster-{key}"
        return self.state / "etcd"

    def pidfile(self, component: str) -> Path:
        return self.state / "pids" / f"{component}.pid"

    def binary(self, name: str) -> Path:
        if name == "kwok":
            return self.kwok_dir / "kwok"
        if name == "etcd":
            return self.etcd_dir / "etcd"
        return self.bin_dir / name


def log(msg: str) -> None:
    print(f"devcluster: {msg}", file=sys.stderr, flush=True)


# --- prerequisites -------------------------------------------------------------------


def check_prerequisites(layout: Layout) -> None:
    missing = []
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
        if not os.access(layout.binary(name), os.X_OK):
            missing.append(f"{name} (expected in {layout.bin_dir}; run hack/build-tools.sh)")
    if not os.access(layout.binary("kwok"), os.X_OK):
        missing.append(f"kwok (expected in {layout.kwok_dir}; run hack/build-tools.sh)")
    if not os.access(layout.binary("etcd"), os.X_OK):
        missing.append(f"etcd (expected in {layout.etcd_dir}; run hack/build-tools.sh)")
    if not shutil.which("openssl"):
        missing.append("openssl (Debian package openssl)")
    if missing:
        raise ClusterError("missing prerequisites:\n  - " + "\n  - ".join(missing))


def check_ports_free(ports: Ports) -> None:
    taken = []
    for name, port in ports.named().items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"{name} needs 127.0.0.1:{port}")
    if taken:
        raise ClusterError(
            "ports already taken by another program:\n  - "
            + "\n  - ".join(taken)
            + "\nstop that program or choose other ports with DEVCLUSTER_PORT_BASE"
            " (the ports are base+43 .. base+80)"
        )


# --- PKI -------------------------------------------------------------------------------


def openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_pki(pki: Path) -> None:
    if (pki / "done").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        openssl("genrsa", "-out", str(pki / "ca.key"), "2048")
        openssl(
            "req", "-x509", "-new", "-nodes", "-key", str(pki / "ca.key"), "-days", "3650",
            "-subj", "/CN=edgemodel-devcluster-ca", "-out", str(pki / "ca.crt"),
        )  # fmt: skip
    sans = "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
    sans += "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
    certs = {
        "apiserver": ("/CN=kube-apiserver", sans, "serverAuth"),
        "admin": ("/O=system:masters/CN=devcluster-admin", None, "clientAuth"),
        "controller-manager": ("/CN=system:kube-controller-manager", None, "clientAuth"),
        "scheduler": ("/CN=system:kube-scheduler", None, "clientAuth"),
        "kwok": ("/O=system:masters/CN=kwok-controller", None, "clientAuth"),
        # The apiserver's identity towards the real nodes' kubelets (logs, exec).
        "apiserver-kubelet-client": (
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            None,
            "clientAuth",
        ),
    }
    for name, (subject, san, usage) in certs.items():
        key, csr, crt = (pki / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        if crt.exists():
            continue
        openssl("genrsa", "-out", str(key), "2048")
        openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        ext = pki / f"{name}.ext"
        lines = [f"extendedKeyUsage={usage}", "keyUsage=critical,digitalSignature,keyEncipherment"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
            "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650",
            "-extfile", str(ext), "-out", str(crt),
        )  # fmt: skip
    # Service-account token signing key pair (TokenRequest, projected tokens).
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    for p in pki.iterdir():
        p.chmod(0o600)
    (pki / "done").write_text("")


def write_kubeconfig(path: Path, layout: Layout, user: str) -> None:
    pki = layout.pki
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "edgemodel-dev",
                "cluster": {
                    "server": f"https://127.0.0.1:{layout.ports.apiserver}",
                    "certificate-authority": str((pki / "ca.crt").resolve()),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str((pki / f"{user}.crt").resolve()),
                    "client-key": str((pki / f"{user}.key").resolve()),
                },
            }
        ],
        "contexts": [
            {"name": "edgemodel-dev", "context": {"cluster": "edgemodel-dev", "user": user}}
        ],
        "current-context": "edgemodel-dev",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


# --- processes -------------------------------------------------------------------------


def runs(pid: int, component: str) -> bool:
    """True when pid is a live (not zombie) process executing the component's binary."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return Path(cmdline.split(b"\0", 1)[0].decode(errors="replace")).name == component


def pid_alive(layout: Layout, component: str) -> int | None:
    try:
        pid = int(layout.pidfile(component).read_text())
    except (OSError, ValueError):
        return None
    return pid if runs(pid, component) else None


def start(layout: Layout, component: str, args: list[str]) -> None:
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.pidfile(component).parent.mkdir(parents=True, exist_ok=True)
    logfile = (layout.logs / f"{component}.log").open("ab")
    proc = subprocess.Popen(
        [str(layout.binary(component)), *args],
        stdin=subprocess.DEVNULL,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=layout.state,
    )
    layout.pidfile(component).write_text(str(proc.pid))
    # Popen can return before the child has exec'd; wait so pid checks see the binary.
    deadline = time.monotonic() + 5
    while not runs(proc.pid, component) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def log_tail(layout: Layout, component: str, lines: int = 15) -> str:
    try:
        text = (layout.logs / f"{component}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(layout: Layout, component: str, probe, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(layout, component):
            raise ClusterError(
                f"{component} exited during start-up; last lines of its log "
                f"({layout.logs / (component + '.log')}):\n{log_tail(layout, component)}"
            )
        if probe():
            return
        time.sleep(0.25)
    raise ClusterError(
        f"{component} did not become healthy within {timeout:.0f}s; last lines of its log:\n"
        f"{log_tail(layout, component)}"
    )


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def admin_tls(layout: Layout) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
    ctx.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
    return ctx


def insecure_tls() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with self-signed certificates.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def kubectl(layout: Layout, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(layout.binary("kubectl")), f"--kubeconfig={layout.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


# --- fleet -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeKind:
    accelerator: str
    arch: str
    instance_type: str
    cpu: str
    memory: str
    extended: dict[str, str]
    taints: tuple[dict[str, str], ...] = ()


def node_kinds(accelerator: str, index: int) -> NodeKind:
    """What a real site's node of this kind looks like (a Jetson, an NPU box, a small x86)."""
    if accelerator == "gpu":
        # Alternate a Jetson Orin board (arm64) and an x86 box with an NVIDIA card.
        gpu = {"nvidia.com/gpu": "1"}
        taint = ({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},)
        if index % 2 == 0:
            return NodeKind("gpu", "arm64", "jetson-orin-nx", "8", "16Gi", gpu, taint)
        return NodeKind("gpu", "amd64", "x86-rtx-a2000", "16", "32Gi", gpu, taint)
    if accelerator == "npu":
        # Alternate an Intel NPU box (amd64) and a Rockchip RK3588 board (arm64). NPU device
        # plugins share one device between a few models (slots); a GPU is exclusive.
        npu = {"edgeai.dev/npu": str(NPU_SLOTS)}
        if index % 2 == 0:
            return NodeKind("npu", "amd64", "intel-core-ultra-npu", "8", "16Gi", npu)
        return NodeKind("npu", "arm64", "rockchip-rk3588", "8", "8Gi", npu)
    return NodeKind("cpu", "amd64", "edge-x86-small", "4", "8Gi", {})


def parse_fleet(spec: str) -> dict[str, int]:
    fleet = {"gpu": 0, "npu": 0, "cpu": 0}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, count = part.partition("=")
        if kind not in fleet or not count.isdigit():
            raise ClusterError(f"bad fleet entry {part!r}: expected e.g. {DEFAULT_FLEET}")
        fleet[kind] = int(count)
    return fleet


def node_manifest(name: str, kind: NodeKind) -> dict[str, object]:
    resources = {"cpu": kind.cpu, "memory": kind.memory, "pods": "110", **kind.extended}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "edgeai.dev/accelerator": kind.accelerator,
                "kubernetes.io/arch": kind.arch,
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": kind.instance_type,
                "type": "kwok",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"taints": list(kind.taints)},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {
                "architecture": kind.arch,
                "operatingSystem": "linux",
                "osImage": "simulated by kwok",
                "kernelVersion": "simulated",
                "kubeletVersion": "kwok",
                "kubeProxyVersion": "kwok",
                "containerRuntimeVersion": "kwok",
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
            },
        },
    }


def ensure_fleet(layout: Layout, fleet: dict[str, int]) -> int:
    nodes = [
        node_manifest(f"edge-{acc}-{i}", node_kinds(acc, i))
        for acc, count in fleet.items()
        for i in range(count)
    ]
    existing = set(kubectl(layout, "get", "nodes", "-o", "name").split())
    new = [n for n in nodes if f"node/{n['metadata']['name']}" not in existing]  # type: ignore[index]
    for start_at in range(0, len(new), 250):
        batch = {"apiVersion": "v1", "kind": "List", "items": new[start_at : start_at + 250]}
        kubectl(layout, "create", "-f", "-", stdin=json.dumps(batch))
    return len(nodes)


def ensure_runtime_classes(layout: Layout) -> None:
    """RuntimeClass nvidia, as the GPU Operator or K3s create it on a site with NVIDIA GPUs:
    GPU pods name it, and would be refused without it (the simulated Jetsons run nothing)."""
    runtime_class = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                     "metadata": {"name": "nvidia"}, "handler": "nvidia"}  # fmt: skip
    kubectl(layout, "apply", "-f", "-", stdin=json.dumps(runtime_class))


def wait_fleet_ready(layout: Layout, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        out = kubectl(
            layout, "get", "nodes", "-l", "type=kwok", "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        )  # fmt: skip
        ready = out.split().count("True")
        if ready >= expected:
            return
        time.sleep(0.5)
    raise ClusterError(
        f"only {ready}/{expected} nodes became Ready within {timeout:.0f}s; kwok log:\n"
        f"{log_tail(layout, 'kwok')}"
    )


def wait_default_serviceaccount(layout: Layout, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ClusterError):
            kubectl(layout, "get", "serviceaccount", "default", "-n", "default")
            return
        time.sleep(0.5)
    raise ClusterError("the controller-manager created no default ServiceAccount in time")


# --- KWOK stages -------------------------------------------------------------------------


OFFLINE_EXEMPT = """\
    - key: '.metadata.labels["kwok.edgeai.dev/offline"]'
      operator: 'DoesNotExist'
"""


def kwok_config(layout: Layout) -> Path:
    """kwok's default node and pod stages plus the project's own test stages, in one file.

    Once any stage is given kwok adds none of its defaults, so its defaults (from the
    module cache, kept by build-tools.sh) are concatenated with ours (hack/kwok/stages/)."""
    defaults = layout.kwok_dir / "stage"
    docs = [
        (defaults / rel).read_text()
        for rel in (
            "node/fast/node-initialize.yaml",
            "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
            "pod/fast/pod-ready.yaml",
            "pod/fast/pod-complete.yaml",
            "pod/fast/pod-delete.yaml",
        )
    ]
    # node-initialize makes any node Ready: not one our node-offline stage holds down.
    selector = "    matchExpressions:\n"
    docs[0] = docs[0].replace(selector, selector + OFFLINE_EXEMPT, 1)
    for f in sorted((ROOT / "hack" / "kwok" / "stages").glob("*.yaml")):
        docs.append(f.read_text())
    path = layout.state / "kwok.yaml"
    path.write_text("\n---\n".join(d.strip().removeprefix("---").strip() for d in docs) + "\n")
    return path


def refresh_kwok(layout: Layout) -> None:
    """A running cluster picks up changed stages (hack/kwok/stages/): kwok restarts."""
    path = layout.state / "kwok.yaml"
    before = path.read_text() if path.exists() else ""
    if kwok_config(layout).read_text() != before:
        log("kwok stages changed; restarting kwok")
        stop_components(layout, ("kwok",))
        start_kwok(layout)


# --- commands --------------------------------------------------------------------------


def running_components(layout: Layout) -> dict[str, int | None]:
    return {c: pid_alive(layout, c) for c in COMPONENTS}


def up(layout: Layout, fleet: dict[str, int], real_nodes: int = 0) -> None:
    t0 = time.monotonic()
    check_prerequisites(layout)
    running = running_components(layout)
    if all(running.values()):
        log("already running; ensuring the fleet")
        refresh_kwok(layout)
    else:
        if any(running.values()):
            log("a previous cluster is half up; stopping it first")
            down(layout, quiet=True)
        check_ports_free(layout.ports)
        start_control_plane(layout)
    write_env(layout)
    ensure_runtime_classes(layout)
    total = ensure_fleet(layout, fleet)
    wait_fleet_ready(layout, total, timeout=120 + total / 10)
    wait_default_serviceaccount(layout, timeout=60)
    real = start_real_nodes(layout, real_nodes)
    log(
        f"cluster is up in {time.monotonic() - t0:.1f}s with {total} simulated nodes"
        f"{' and real ' + ', '.join(real) if real else ''}; kubeconfig: {layout.kubeconfig}"
    )


def _kubectl_for(layout: Layout):  # type: ignore[no-untyped-def]
    return lambda *args, stdin=None: kubectl(layout, *args, stdin=stdin)


def start_real_nodes(layout: Layout, count: int) -> list[str]:
    """Real kubelet + containerd nodes, pulling from the image kit's registry (started
    here when it does not run; `down` stops it again)."""
    if count <= 0:
        return []
    kit = imagekit.layout()
    try:
        if not imagekit.registry_ready(kit):
            imagekit.cmd_up(kit)
            (layout.state / "started-imagekit").write_text("")
        return realnode.up(
            count, cluster_state=layout.state, port_base=layout.port_base,
            bin_dir=layout.bin_dir, pki=layout.pki, apiserver_port=layout.ports.apiserver,
            registry=kit.registry, kubectl=_kubectl_for(layout),
        )  # fmt: skip
    except (imagekit.KitError, realnode.NodeError) as err:
        raise ClusterError(str(err)) from err


def write_env(layout: Layout) -> None:
    """.devcluster/env: `source` it to use the cluster with the pinned kubectl."""
    bin_dir = layout.state / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "kubectl"
    link.unlink(missing_ok=True)
    link.symlink_to(layout.binary("kubectl"))
    (layout.state / "env").write_text(
        f'export KUBECONFIG="{layout.kubeconfig}"\nexport PATH="{bin_dir}:$PATH"\n'
    )


def start_control_plane(layout: Layout) -> None:
    p, pki = layout.ports, layout.pki
    layout.state.mkdir(parents=True, exist_ok=True)
    make_pki(pki)
    write_kubeconfig(layout.kubeconfig, layout, "admin")
    for user in ("controller-manager", "scheduler", "kwok"):
        write_kubeconfig(layout.state / f"{user}.kubeconfig", layout, user)

    data = layout.etcd_data
    shutil.rmtree(data, ignore_errors=True)
    start(layout, "etcd", [
        f"--data-dir={data}", "--name=devcluster",
        f"--listen-client-urls=http://127.0.0.1:{p.etcd}",
        f"--advertise-client-urls=http://127.0.0.1:{p.etcd}",
        f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
        f"--initial-cluster=devcluster=http://127.0.0.1:{p.etcd_peer}",
        "--quota-backend-bytes=4294967296", "--snapshot-count=100000",
    ])  # fmt: skip
    wait_until(layout, "etcd", lambda: http_ok(f"http://127.0.0.1:{p.etcd}/health"), 30)

    start(layout, "kube-apiserver", [
        f"--etcd-servers=http://127.0.0.1:{p.etcd}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={p.apiserver}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=RBAC",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--api-audiences=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # The "kubernetes" Service cannot point at a loopback address; nothing here needs it.
        "--endpoint-reconciler-type=none",
        # Real nodes: reach their kubelets by InternalIP (their pod bridge), as the client
        # their authorization webhook trusts.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--profiling=false", "--max-requests-inflight=800", "--max-mutating-requests-inflight=400",
    ])  # fmt: skip
    tls = admin_tls(layout)
    readyz = f"https://127.0.0.1:{p.apiserver}/readyz"
    wait_until(layout, "kube-apiserver", lambda: http_ok(readyz, tls), 90)

    common = ["--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false"]
    kcm_kc = layout.state / "controller-manager.kubeconfig"
    start(layout, "kube-controller-manager", [
        *common, f"--secure-port={p.controller_manager}",
        f"--kubeconfig={kcm_kc}", f"--authentication-kubeconfig={kcm_kc}",
        f"--authorization-kubeconfig={kcm_kc}",
        f"--cert-dir={layout.state / 'controller-manager-certs'}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}", "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-deployment-syncs=10",
        "--concurrent-daemonset-syncs=10", "--concurrent-replicaset-syncs=10",
        f"--node-monitor-grace-period={layout.node_grace_seconds}s",
    ])  # fmt: skip
    sched_kc = layout.state / "scheduler.kubeconfig"
    start(layout, "kube-scheduler", [
        *common, f"--secure-port={p.scheduler}",
        f"--kubeconfig={sched_kc}", f"--authentication-kubeconfig={sched_kc}",
        f"--authorization-kubeconfig={sched_kc}",
        "--kube-api-qps=200", "--kube-api-burst=400",
    ])  # fmt: skip
    insecure = insecure_tls()
    wait_until(
        layout, "kube-controller-manager",
        lambda: http_ok(f"https://127.0.0.1:{p.controller_manager}/healthz", insecure), 60,
    )  # fmt: skip
    wait_until(
        layout, "kube-scheduler",
        lambda: http_ok(f"https://127.0.0.1:{p.scheduler}/healthz", insecure), 60,
    )  # fmt: skip

    start_kwok(layout)


def start_kwok(layout: Layout) -> None:
    p = layout.ports
    start(layout, "kwok", [
        f"--kubeconfig={layout.state / 'kwok.kubeconfig'}",
        f"--config={kwok_config(layout)}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--server-address=127.0.0.1:{p.kwok}",
        "--cidr=10.0.0.0/16", "--node-ip=10.0.0.1",
        # kwok renews each node's Lease; its heartbeat stage then writes node status only
        # every ~10 minutes. Without leases the nodes flap NotReady every node-monitor period.
        "--node-lease-duration-seconds=40",
    ])  # fmt: skip
    wait_until(layout, "kwok", lambda: http_ok(f"http://127.0.0.1:{p.kwok}/healthz"), 30)


def stop_components(layout: Layout, components: tuple[str, ...]) -> list[str]:
    stopped = []
    for component in components:
        pid = pid_alive(layout, component)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            stopped.append((component, pid))
    deadline = time.monotonic() + 15
    for component, pid in stopped:
        while pid_alive(layout, component) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(layout, component):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    return [c for c, _ in stopped]


def restart_apiserver(layout: Layout, down_seconds: float) -> None:
    """Stop the API server (SIGTERM, as a rolling restart does), keep it down for a while,
    then start it again with the flags it ran with; everything else keeps running."""
    pid = pid_alive(layout, "kube-apiserver")
    if not pid:
        raise ClusterError("no kube-apiserver runs in this state directory")
    args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")[1:]
    stop_components(layout, ("kube-apiserver",))
    time.sleep(down_seconds)
    start(layout, "kube-apiserver", [a.decode() for a in args])
    readyz = f"https://127.0.0.1:{layout.ports.apiserver}/readyz"
    wait_until(layout, "kube-apiserver", lambda: http_ok(readyz, admin_tls(layout)), 90)
    log(f"restarted kube-apiserver after {down_seconds:g}s down")


def down(layout: Layout, quiet: bool = False) -> None:
    # The controllers and kwok first: nothing may recreate the pods that the real nodes
    # tear down next, through the apiserver, which stops last.
    stopped = stop_components(layout, ("kwok", "kube-scheduler", "kube-controller-manager"))
    api = pid_alive(layout, "kube-apiserver") is not None and layout.kubeconfig.exists()
    real = realnode.down(
        cluster_state=layout.state, port_base=layout.port_base, bin_dir=layout.bin_dir,
        kubectl=_kubectl_for(layout) if api else None,
    )  # fmt: skip
    stopped += real
    stopped += stop_components(layout, ("kube-apiserver", "etcd"))
    if (layout.state / "started-imagekit").exists():
        with contextlib.suppress(imagekit.KitError):
            imagekit.cmd_down(imagekit.layout())
    shutil.rmtree(layout.etcd_data, ignore_errors=True)
    shutil.rmtree(layout.state, ignore_errors=True)
    if not quiet:
        log(f"stopped {', '.join(stopped) or 'nothing (no cluster was running)'}")


def status(layout: Layout) -> int:
    running = running_components(layout)
    for component, pid in running.items():
        print(f"{component:<24} {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
    if not all(running.values()):
        return 1
    healthy = True
    for name, procs in realnode.status(layout.state, layout.port_base):
        for binary, pid in procs.items():
            healthy = healthy and pid is not None
            state = f"running (pid {pid})" if pid else "stopped"
            print(f"{name + ' ' + binary:<24} {state}")
    print(f"\nKUBECONFIG={layout.kubeconfig}   (or: source {layout.state / 'env'})")
    columns = "edgeai.dev/accelerator,kubernetes.io/arch,node.kubernetes.io/instance-type"
    for title, selector in (("Real nodes (kubelet + containerd)", "type!=kwok"),
                            ("Simulated nodes (KWOK)", "type=kwok")):  # fmt: skip
        print(f"\n{title}:")
        print(kubectl(layout, "get", "nodes", "-l", selector, "-L", columns), end="")
    return 0 if healthy else 3  # 3: the cluster runs, a real node's process does not


def built_tool_dirs() -> list[str]:
    """Directories of the cached binaries; builds them on first use (minutes, once)."""
    proc = subprocess.run(
        [str(ROOT / "hack" / "build-tools.sh")], stdout=subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        raise ClusterError("hack/build-tools.sh failed (its output is above)")
    return proc.stdout.strip().split(":")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", choices=["up", "down", "status", "kubeconfig", "restart-apiserver"]
    )
    parser.add_argument(
        "--state-dir", default=os.environ.get("DEVCLUSTER_STATE", str(ROOT / ".devcluster"))
    )
    parser.add_argument("--fleet", default=os.environ.get("FLEET") or DEFAULT_FLEET,
                        help=f"nodes per accelerator (default {DEFAULT_FLEET})")  # fmt: skip
    real_default = int(os.environ.get("REAL_NODES") or 1)
    parser.add_argument("--real-nodes", type=int, default=real_default,
                        help="real kubelet + containerd nodes (default 1; 0: none)")  # fmt: skip
    parser.add_argument("--bin-dir", default=os.environ.get("K8S_BIN_DIR", ""))
    parser.add_argument("--kwok-dir", default=os.environ.get("KWOK_DIR", ""))
    parser.add_argument("--etcd-dir", default=os.environ.get("ETCD_DIR", ""))
    parser.add_argument(
        "--port-base", type=int, default=int(os.environ.get("DEVCLUSTER_PORT_BASE", "16400"))
    )
    parser.add_argument(
        "--node-grace-seconds",
        type=int,
        default=int(os.environ.get("NODE_GRACE_SECONDS") or 50),
        help="seconds a node may miss heartbeats before it is NotReady (default 50, as "
        "upstream). A large simulated fleet on a small machine wants more: kwok's lease "
        "renewals fall behind under load, and pods of nodes called NotReady stay not Ready",
    )
    parser.add_argument("--down-seconds", type=float, default=0.0,
                        help="restart-apiserver: how long it stays down")  # fmt: skip
    args = parser.parse_args(argv)

    try:
        state = Path(args.state_dir).resolve()
        if args.command == "up" and not (args.bin_dir and args.kwok_dir and args.etcd_dir):
            args.bin_dir, args.kwok_dir, args.etcd_dir = built_tool_dirs()
        elif not args.bin_dir and (state / "bin" / "kubectl").exists():
            args.bin_dir = str((state / "bin" / "kubectl").resolve().parent)  # what `up` used
        if not 0 <= args.real_nodes <= 8:
            raise ClusterError(f"REAL_NODES must be 0..8, got {args.real_nodes}")
        layout = Layout(
            state=state,
            bin_dir=Path(args.bin_dir),
            kwok_dir=Path(args.kwok_dir),
            etcd_dir=Path(args.etcd_dir),
            ports=Ports.from_base(args.port_base),
            port_base=args.port_base,
            node_grace_seconds=args.node_grace_seconds,
        )
        if args.command == "up":
            up(layout, parse_fleet(args.fleet), args.real_nodes)
        elif args.command == "down":
            down(layout)
        elif args.command == "restart-apiserver":
            restart_apiserver(layout, args.down_seconds)
        elif args.command == "kubeconfig":
            print(layout.kubeconfig)
        else:
            return status(layout)
    except ClusterError as err:
        log(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
