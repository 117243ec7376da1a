"""Real worker nodes for the local edge cluster: a kubelet and containerd per node, the
CNI bridge and host-local IPAM for pod networking, and kube-proxy for Services, next to
the KWOK fleet. What a K3s agent is, minus the packaging.

Used by devcluster.py (`up --real-nodes N`, `down`, `status`); standard library only.
Needs root: it creates a bridge, iptables rules (kube-proxy, CNI) and mounts.

Per node i (name real-cpu-i), all on this host:
- pods in 10.244.i.0/24 on bridge emrn<i>, whose address 10.244.i.1 is also the node's
  InternalIP: the kubelet listens there and nowhere else, the apiserver reaches it there,
  and pods reach the host there (a model store, say);
- state in <cluster state>/nodes/real-cpu-i, runtime sockets in /run/edgemodel-<key>-i;
- one kube-proxy for the host (node 0's view): every node shares the host's iptables.
Images come from the local registry over plain HTTP; the sandbox (pause) image is built
here from a few lines of C and pushed there, since no public registry can be reached.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLUSTER_CIDR = "10.244.0.0/16"
NETWORK_NAME = "edgemodel-realnode"  # the CNI network; its iptables rules carry this name
PAUSE_REPOSITORY = "devcluster/pause"
PAUSE_TAG = "3.10"
# The kubelet changes these on start; recorded before, put back at teardown.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
# A node of the simulated fleet's CPU kind (devcluster.node_kinds("cpu")), for real.
NODE_LABELS = {
    "edgeai.dev/accelerator": "cpu",
    "node.kubernetes.io/instance-type": "edge-x86-small",
}
PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void die(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0}, r = {0};
  a.sa_handler = die; sigaction(SIGINT, &a, NULL); sigaction(SIGTERM, &a, NULL);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
"""


class NodeError(RuntimeError):
    """A problem a person can act on; devcluster prints it without a traceback."""


@dataclass(frozen=True)
class RealNode:
    index: int
    cluster_state: Path
    port_base: int

    @property
    def name(self) -> str:
        return f"real-cpu-{self.index}"

    @property
    def state(self) -> Path:
        return self.cluster_state / "nodes" / self.name

    @property
    def run(self) -> Path:
        # Short: unix socket paths must stay under 108 bytes.
        key = hashlib.sha256(str(self.cluster_state).encode()).hexdigest()[:6]
        return Path("/run") / f"edgemodel-{key}-{self.index}"

    @property
    def bridge(self) -> str:
        return f"emrn{self.index}"

    @property
    def gateway(self) -> str:
        """The bridge's address: the pods' gateway and the node's InternalIP."""
        return f"10.244.{self.index}.1"

    @property
    def subnet(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def socket(self) -> Path:
        return self.run / "containerd" / "containerd.sock"

    @property
    def kubelet_port(self) -> int:
        return self.port_base + 10 + 2 * self.index

    @property
    def kubelet_healthz_port(self) -> int:
        return self.kubelet_port + 1

    def pidfile(self, component: str) -> Path:
        return self.state / f"{component}.pid"

    def logfile(self, component: str) -> Path:
        return self.state / f"{component}.log"


def proxy_ports(port_base: int) -> tuple[int, int]:
    """kube-proxy's healthz and metrics ports (127.0.0.1)."""
    return port_base + 8, port_base + 9


# --- small helpers -----------------------------------------------------------------------


def run(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def quiet(*args: str) -> None:
    subprocess.run(list(args), capture_output=True, text=True)


def alive(pidfile: Path, binary: str) -> int | None:
    try:
        pid = int(pidfile.read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z" or Path(exe).name != binary:
        return None
    return pid


def start(node: RealNode, component: str, argv: list[str]) -> None:
    with node.logfile(component).open("ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=node.state,
        )  # fmt: skip
    node.pidfile(component).write_text(str(proc.pid))


def stop(pidfile: Path, binary: str, timeout: float = 15) -> None:
    pid = alive(pidfile, binary)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pidfile, binary) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pidfile, binary):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
    pidfile.unlink(missing_ok=True)


def wait_for(check: Callable[[], bool], what: str, logfile: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    with contextlib.suppress(OSError):
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-20:])
    raise NodeError(
        f"{what} did not happen within {timeout:.0f}s; last lines of {logfile}:\n{tail}"
    )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


# --- prerequisites -------------------------------------------------------------------------


PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "gcc": "gcc",
}


def check_prerequisites(bin_dir: Path) -> None:
    if os.geteuid() != 0:
        raise NodeError(
            "real nodes need root (a bridge, iptables rules, mounts); run as root, "
            "or set REAL_NODES=0 for a simulated fleet only"
        )
    missing = [f"{b} (Debian package {p})" for b, p in PACKAGES.items() if not shutil.which(b)]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("CNI plugins in /usr/lib/cni (Debian package containernetworking-plugins)")
    for binary in ("kubelet", "kube-proxy"):
        if not os.access(bin_dir / binary, os.X_OK):
            missing.append(f"{binary} (expected in {bin_dir}; run hack/build-tools.sh)")
    if missing:
        raise NodeError(
            "missing prerequisites for real nodes (hack/install-deps.sh installs the "
            "packages):\n  - " + "\n  - ".join(missing)
        )


# --- the sandbox image ---------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _registry(
    method: str, url: str, data: bytes | None = None, ctype: str = ""
) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method)
    if ctype:
        request.add_header("Content-Type", ctype)
    if data is not None:
        request.add_header("Content-Length", str(len(data)))
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def _push_blob(base: str, data: bytes) -> str:
    digest = _sha(data)
    if _registry("HEAD", f"{base}/blobs/{digest}")[0] == 200:
        return digest
    status, headers = _registry("POST", f"{base}/blobs/uploads/", b"")
    if status != 202:
        raise NodeError(f"the registry refused a blob upload ({status})")
    location = headers["Location"]
    if location.startswith("/"):
        location = base.split("/v2/")[0] + location
    sep = "&" if "?" in location else "?"
    status, _ = _registry(
        "PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream"
    )
    if status != 201:
        raise NodeError(f"the registry refused a blob ({status})")
    return digest


def pause_image(registry: str, work: Path) -> str:
    """Build the pause binary, wrap it in a one-layer image, push it; its reference."""
    reference = f"{registry}/{PAUSE_REPOSITORY}:{PAUSE_TAG}"
    base = f"http://{registry}/v2/{PAUSE_REPOSITORY}"
    accept = "application/vnd.oci.image.manifest.v1+json"
    request = urllib.request.Request(f"{base}/manifests/{PAUSE_TAG}", method="HEAD")
    request.add_header("Accept", accept)
    with (
        contextlib.suppress(urllib.error.URLError, OSError),
        urllib.request.urlopen(request, timeout=5) as resp,
    ):
        if resp.status == 200:
            return reference
    work.mkdir(parents=True, exist_ok=True)
    (work / "pause.c").write_text(PAUSE_C)
    run("gcc", "-static", "-Os", "-s", "-o", str(work / "pause"), str(work / "pause.c"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        binary = (work / "pause").read_bytes()
        info.size, info.mode, info.mtime = len(binary), 0o755, 0
        tar.addfile(info, io.BytesIO(binary))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [_sha(raw.getvalue())]},
    }).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": accept,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _push_blob(base, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _push_blob(base, layer), "size": len(layer)}],
    }).encode()  # fmt: skip
    status, _ = _registry("PUT", f"{base}/manifests/{PAUSE_TAG}", manifest, accept)
    if status != 201:
        raise NodeError(f"the registry refused the pause image's manifest ({status})")
    return reference


# --- configuration files -------------------------------------------------------------------


def write_pki(node: RealNode, pki: Path) -> None:
    """Client certificates for the kubelet (system:node:<name>) and kube-proxy."""
    certs = node.state / "pki"
    certs.mkdir(parents=True, exist_ok=True)
    subjects = {
        "kubelet": f"/O=system:nodes/CN=system:node:{node.name}",
        "kube-proxy": "/CN=system:kube-proxy",
    }
    ext = certs / "client.ext"
    ext.write_text(
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    for name, subject in subjects.items():
        key, csr, crt = (certs / f"{name}.{e}" for e in ("key", "csr", "crt"))
        if crt.exists():
            continue
        run("openssl", "genrsa", "-out", str(key), "2048")
        run("openssl", "req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
            "-CAkey", str(pki / "ca.key"), "-set_serial", "0x" + os.urandom(12).hex(),
            "-days", "3650", "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    for p in certs.iterdir():
        p.chmod(0o600)


def kubeconfig(node: RealNode, user: str, pki: Path, apiserver_port: int) -> Path:
    certs = node.state / "pki"
    path = node.state / f"{user}.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": f"https://127.0.0.1:{apiserver_port}",
            "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(certs / f"{user}.crt"),
            "client-key": str(certs / f"{user}.key")}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }, indent=2))  # fmt: skip
    path.chmod(0o600)
    return path


def write_configs(node: RealNode, registry: str, pause: str, pki: Path) -> None:
    etc = node.state / "etc"
    for d in (etc / "cni", etc / "certs.d" / registry, node.run / "containerd"):
        d.mkdir(parents=True, exist_ok=True)
    # containerd as the kubelet's CRI runtime. Fixes for these machines: no negative OOM
    # scores (no CAP_SYS_RESOURCE), network namespaces under the state dir (netavark
    # bind-mounts /run/netns onto itself), no AppArmor, no hugetlb cgroup.
    (etc / "containerd.toml").write_text(f"""version = 2
root = "{node.state / "containerd"}"
state = "{node.run / "containerd"}"
[grpc]
  address = "{node.socket}"
[ttrpc]
  address = "{node.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{pause}"
    disable_apparmor = true
    restrict_oom_score_adj = true
    tolerate_missing_hugetlb_controller = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "{shutil.which("runc") or "/usr/bin/runc"}"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{etc / "cni"}"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "{etc / "certs.d"}"
""")
    # The local registry speaks plain HTTP, like a site registry declared in registries.yaml.
    (etc / "certs.d" / registry / "hosts.toml").write_text(
        f'server = "http://{registry}"\n[host."http://{registry}"]\n'
        '  capabilities = ["pull", "resolve"]\n  skip_verify = true\n'
    )
    (etc / "cni" / "10-realnode.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": NETWORK_NAME,
        "plugins": [
            {"type": "bridge", "bridge": node.bridge, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": node.subnet,
                                                         "gateway": node.gateway}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(node.state / "cni-ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2))  # fmt: skip
    # The kubelet: cgroup v1 with cgroupfs (no systemd here), listening on the bridge only,
    # clients authenticated by the cluster CA (the apiserver's kubelet-client certificate)
    # and authorized by the apiserver (SubjectAccessReview).
    (etc / "kubelet.yaml").write_text(json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupsPerQOS": True,
        "cgroupRoot": "/", "enforceNodeAllocatable": ["pods"],
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "runtimeRequestTimeout": "2m", "serializeImagePulls": False,
        "podLogsDir": str(node.state / "pod-logs"),
        "address": node.gateway, "port": node.kubelet_port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": node.kubelet_healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "registerNode": True,
        "nodeStatusUpdateFrequency": "10s", "nodeStatusReportFrequency": "1m",
        "nodeLeaseDurationSeconds": 40,
        "clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf",
        "failSwapOn": False, "maxPods": 40,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%",
                         "nodefs.inodesFree": "2%", "imagefs.available": "2%"},
        "imageGCHighThresholdPercent": 95, "imageGCLowThresholdPercent": 90,
        "rotateCertificates": False, "serverTLSBootstrap": False,
    }, indent=2))  # fmt: skip


def write_proxy_config(node: RealNode, port_base: int, kubeconfig_path: Path) -> Path:
    healthz, metrics = proxy_ports(port_base)
    path = node.state / "etc" / "kube-proxy.yaml"
    path.write_text(json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "hostnameOverride": node.name, "clusterCIDR": CLUSTER_CIDR,
        "clientConnection": {"kubeconfig": str(kubeconfig_path)},
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        "iptables": {"masqueradeAll": False, "masqueradeBit": 14, "syncPeriod": "30s",
                     "minSyncPeriod": "1s", "localhostNodePorts": False},
        # Leave the host's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }, indent=2))  # fmt: skip
    return path


# --- up -------------------------------------------------------------------------------------


def record_sysctls(cluster_state: Path) -> None:
    saved = cluster_state / "nodes" / "sysctls.json"
    if saved.exists():
        return
    saved.parent.mkdir(parents=True, exist_ok=True)
    values = {k: Path(f"/proc/sys/{k}").read_text().strip() for k in KUBELET_SYSCTLS}
    saved.write_text(json.dumps(values))


def ensure_bridge(node: RealNode) -> None:
    owner = node.state / "bridge"
    if link_exists(node.bridge) and not owner.exists():
        raise NodeError(
            f"bridge {node.bridge} exists but this cluster did not create it: another "
            "cluster on this machine runs real nodes (only one can: kube-proxy owns the "
            "host's Service rules). Stop it, or set REAL_NODES=0"
        )
    if not link_exists(node.bridge):
        run("ip", "link", "add", node.bridge, "type", "bridge")
        owner.write_text(node.bridge)
        run("ip", "addr", "add", f"{node.gateway}/24", "dev", node.bridge)
    run("ip", "link", "set", node.bridge, "up")


def node_ready(kubectl: Callable[..., str], name: str) -> bool:
    try:
        out = kubectl("get", "node", name, "-o",
                      'jsonpath={.status.conditions[?(@.type=="Ready")].status}')  # fmt: skip
    except Exception:  # not registered yet
        return False
    return out.strip() == "True"


def up_node(
    node: RealNode, *, bin_dir: Path, pki: Path, apiserver_port: int, registry: str,
    pause: str, kubectl: Callable[..., str],
) -> None:  # fmt: skip
    node.state.mkdir(parents=True, exist_ok=True)
    ensure_bridge(node)
    write_pki(node, pki)
    # No Node authorizer here (RBAC only): the kubelet's identity gets the system:node role.
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{node.name}-node"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": f"system:node:{node.name}"}],
    }  # fmt: skip
    kubectl("apply", "-f", "-", stdin=json.dumps(binding))
    write_configs(node, registry, pause, pki)
    if not alive(node.pidfile("containerd"), "containerd"):
        start(
            node,
            "containerd",
            ["containerd", "--config", str(node.state / "etc" / "containerd.toml")],
        )
    wait_for(
        lambda: run("ctr", "-a", str(node.socket), "version", check=False).returncode == 0,
        f"containerd of {node.name} answering", node.logfile("containerd"), 30,
    )  # fmt: skip
    if not alive(node.pidfile("kubelet"), "kubelet"):
        labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
        start(node, "kubelet", [
            str(bin_dir / "kubelet"), f"--config={node.state / 'etc' / 'kubelet.yaml'}",
            f"--kubeconfig={kubeconfig(node, 'kubelet', pki, apiserver_port)}",
            f"--root-dir={node.state / 'kubelet'}", f"--cert-dir={node.state / 'kubelet' / 'pki'}",
            f"--hostname-override={node.name}", f"--node-ip={node.gateway}",
            f"--node-labels={labels}", "--v=1",
        ])  # fmt: skip
    wait_for(lambda: node_ready(kubectl, node.name), f"node {node.name} Ready",
             node.logfile("kubelet"), 90)  # fmt: skip


def up_proxy(
    node: RealNode, *, bin_dir: Path, pki: Path, apiserver_port: int, port_base: int
) -> None:
    if not alive(node.pidfile("kube-proxy"), "kube-proxy"):
        config = write_proxy_config(
            node, port_base, kubeconfig(node, "kube-proxy", pki, apiserver_port)
        )
        start(node, "kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={config}", "--v=1"])
    healthz = f"http://127.0.0.1:{proxy_ports(port_base)[0]}/healthz"
    wait_for(lambda: http_ok(healthz), "kube-proxy healthy", node.logfile("kube-proxy"), 60)


def up(
    count: int, *, cluster_state: Path, port_base: int, bin_dir: Path, pki: Path,
    apiserver_port: int, registry: str, kubectl: Callable[..., str],
) -> list[str]:  # fmt: skip
    """Start `count` real nodes (idempotent); their names."""
    if count <= 0:
        return []
    check_prerequisites(bin_dir)
    pause = pause_image(registry, cluster_state / "nodes" / "pause")
    record_sysctls(cluster_state)
    nodes = [RealNode(i, cluster_state, port_base) for i in range(count)]
    for node in nodes:
        up_node(node, bin_dir=bin_dir, pki=pki, apiserver_port=apiserver_port,
                registry=registry, pause=pause, kubectl=kubectl)  # fmt: skip
    up_proxy(nodes[0], bin_dir=bin_dir, pki=pki, apiserver_port=apiserver_port,
             port_base=port_base)  # fmt: skip
    return [n.name for n in nodes]


# --- down -----------------------------------------------------------------------------------


def existing(cluster_state: Path, port_base: int) -> list[RealNode]:
    root = cluster_state / "nodes"
    found = sorted(p.name for p in root.glob("real-cpu-*") if p.is_dir()) if root.is_dir() else []
    return [RealNode(int(n.rsplit("-", 1)[1]), cluster_state, port_base) for n in found]


def _mounts_under(*roots: Path) -> list[str]:
    targets = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if any(target == str(r) or target.startswith(f"{r}/") for r in roots):
                targets.append(target)
    return sorted(set(targets), key=lambda t: t.count("/"), reverse=True)


def _cleanup_iptables() -> None:
    """The kubelet's chains (kube-proxy --cleanup leaves them) and CNI rules of ours."""
    for ipt in ("iptables", "ip6tables"):
        if not shutil.which(ipt):
            continue
        for chain in ("INPUT", "OUTPUT"):
            for _ in range(10):
                if subprocess.run([ipt, "-D", chain, "-j", "KUBE-FIREWALL"],
                                  capture_output=True).returncode != 0:  # fmt: skip
                    break
        quiet(ipt, "-F", "KUBE-FIREWALL")
        quiet(ipt, "-X", "KUBE-FIREWALL")
        for table in ("mangle", "nat", "filter"):
            quiet(ipt, "-t", table, "-F", "KUBE-KUBELET-CANARY")
            quiet(ipt, "-t", table, "-X", "KUBE-KUBELET-CANARY")
        quiet(ipt, "-t", "mangle", "-X", "KUBE-IPTABLES-HINT")
        # Masquerade rules the bridge plugin left for pods whose CNI DEL never ran.
        rules = subprocess.run([ipt, "-t", "nat", "-S", "POSTROUTING"], capture_output=True,
                               text=True).stdout.splitlines()  # fmt: skip
        for rule in rules:
            if f'name: \\"{NETWORK_NAME}\\"' in rule or f'name: "{NETWORK_NAME}"' in rule:
                chain = rule.split(" -j ")[-1].split()[0]
                quiet(*[ipt, "-t", "nat", "-D", *rule.split()[1:]])
                quiet(ipt, "-t", "nat", "-F", chain)
                quiet(ipt, "-t", "nat", "-X", chain)


def _remove_cgroups() -> None:
    """The kubelet's pod cgroups (/kubepods...), deepest first, in every v1 hierarchy."""
    root = Path("/sys/fs/cgroup")
    for hierarchy in root.iterdir() if root.is_dir() else []:
        top = hierarchy / "kubepods"
        if hierarchy.is_symlink() or not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()


def down(
    *, cluster_state: Path, port_base: int, bin_dir: Path, kubectl: Callable[..., str] | None,
) -> list[str]:  # fmt: skip
    """Stop every real node of this cluster and remove what it created; their names.
    `kubectl`: the running cluster, to delete the nodes' pods first (None when it is gone)."""
    nodes = existing(cluster_state, port_base)
    if not nodes:
        return []
    names = [n.name for n in nodes]
    if kubectl is not None:
        # Pods first, while the kubelets run: that releases their network (CNI DEL) and
        # volumes. The caller has stopped the controllers, so nothing recreates them.
        for node in nodes:
            with contextlib.suppress(Exception):
                on_node = f"spec.nodeName={node.name}"
                kubectl("delete", "pods", "--all-namespaces", "--field-selector", on_node,
                        "--grace-period=5", "--timeout=45s")  # fmt: skip
    proxy = nodes[0]
    if alive(proxy.pidfile("kube-proxy"), "kube-proxy"):
        stop(proxy.pidfile("kube-proxy"), "kube-proxy")
        quiet(str(bin_dir / "kube-proxy"), "--cleanup")
    for node in nodes:
        stop(node.pidfile("kubelet"), "kubelet")
        if alive(node.pidfile("containerd"), "containerd"):
            sock = str(node.socket)
            tasks = run("ctr", "-a", sock, "-n", "k8s.io", "tasks", "ls", "-q", check=False)
            for task in tasks.stdout.split():
                quiet("ctr", "-a", sock, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", task)
            time.sleep(0.5)
            for task in tasks.stdout.split():
                quiet("ctr", "-a", sock, "-n", "k8s.io", "tasks", "delete", "-f", task)
            containers = run(
                "ctr", "-a", sock, "-n", "k8s.io", "containers", "ls", "-q", check=False
            )
            for cid in containers.stdout.split():
                quiet("ctr", "-a", sock, "-n", "k8s.io", "containers", "delete", cid)
        stop(node.pidfile("containerd"), "containerd")
        _kill_shims(node)
        for target in _mounts_under(node.state, node.run):
            quiet("umount", "-l", target)
        if (node.state / "bridge").exists() or link_exists(node.bridge):
            quiet("ip", "link", "delete", node.bridge)
        if kubectl is not None:
            with contextlib.suppress(Exception):
                kubectl("delete", "node", node.name, "--ignore-not-found", "--wait=false")
            with contextlib.suppress(Exception):
                kubectl("delete", "clusterrolebinding", f"{node.name}-node", "--ignore-not-found")
        subprocess.run(["rm", "-rf", "--one-file-system", str(node.run), str(node.state)],
                       capture_output=True)  # fmt: skip
    _cleanup_iptables()
    _remove_cgroups()
    restore_sysctls(cluster_state)
    shutil.rmtree(cluster_state / "nodes", ignore_errors=True)
    return names


def _kill_shims(node: RealNode) -> None:
    """containerd's shims outlive it (they daemonize); ours name our socket."""
    marker = str(node.socket).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, ProcessLookupError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"containerd-shim" in cmdline and marker in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)


def restore_sysctls(cluster_state: Path) -> None:
    saved = cluster_state / "nodes" / "sysctls.json"
    with contextlib.suppress(OSError, ValueError):
        for key, value in json.loads(saved.read_text()).items():
            Path(f"/proc/sys/{key}").write_text(value)


def status(cluster_state: Path, port_base: int) -> list[tuple[str, dict[str, int | None]]]:
    """Per real node: its processes and their pids (None when stopped)."""
    out = []
    for node in existing(cluster_state, port_base):
        procs = {b: alive(node.pidfile(b), b) for b in ("containerd", "kubelet")}
        if node.index == 0:
            procs["kube-proxy"] = alive(node.pidfile("kube-proxy"), "kube-proxy")
        out.append((node.name, procs))
    return out
