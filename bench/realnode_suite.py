"""Suite `realnode`: on the real node (kubelet + containerd) of the shared local cluster.

From `kubectl apply` until the first successful inference through the target's Service,
asked by a client on the host every 100 ms over a new connection:
- cold: the server image is not on the node (removed from containerd first), so it pulls;
- warm: the EdgeModel deleted and applied again, the image already on the node;
- a model-only update (version 2 of the model) until the Service answers as version 2,
  with the operator serving the published model (the pod fetches it: no image pulled) and
  with the operator building per-model images (the node pulls one new layer).
And the bytes the node's containerd added to its content store for each, against a cold
pull of the image. Needs `make cluster-up` with its real node (REAL_NODES=1, the default)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from common import ROOT, log, wait_for
from kube import Operator

sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests" / "models"))

REPEATS = {"tiny": 1, "full": 3}
NODE = "real-cpu-0"
STATE = Path(os.environ.get("DEVCLUSTER_STATE") or ROOT / ".devcluster")


def _kubectl(*args: str, stdin: str | None = None) -> str:
    kubectl = (STATE / "bin" / "kubectl").resolve()
    proc = subprocess.run([str(kubectl), f"--kubeconfig={STATE / 'kubeconfig'}", *args],
                          input=stdin, capture_output=True, text=True, check=True)  # fmt: skip
    return proc.stdout


class Node:
    """The real node's containerd, through ctr."""

    def __init__(self) -> None:
        import realnode

        self.socket = str(realnode.RealNode(0, STATE.resolve(), 16400).socket)

    def ctr(self, *args: str) -> str:
        return subprocess.run(["ctr", "-a", self.socket, "-n", "k8s.io", *args],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip

    def content_bytes(self) -> int:
        """Bytes in the node's content store; ctr prints sizes rounded to 4 digits
        (4.955kB), so the sum is exact to those digits."""
        lines = self.ctr("content", "ls").splitlines()[1:]
        fields = [[f for f in line.split("\t") if f] for line in lines]
        return sum(_size(f[1]) for f in fields if len(f) > 1)

    def forget(self, repository: str) -> None:
        """Remove every image of `repository`, under any of its names (the CRI also names
        an image by its config digest), and check containerd dropped the content, so that
        the next pull is a cold one."""
        rows = [line.split() for line in self.ctr("images", "ls").splitlines()[1:]]
        digests = {row[2] for row in rows if len(row) > 2 and row[0].startswith(repository)}
        refs = [row[0] for row in rows if len(row) > 2 and row[2] in digests]
        if refs:
            self.ctr("images", "rm", "--sync", *refs)
        held = digests & set(self.ctr("content", "ls", "-q").split())
        if held:
            raise RuntimeError(
                f"{NODE}'s containerd still holds {sorted(held)} after removing its images: "
                "is a container still using them (the demo?)"
            )


_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def _size(text: str) -> int:
    number = text.rstrip("kMGTB")
    return int(float(number) * _UNITS[text[len(number) :]])


def _answers(ip: str, model: str, version: str, body: bytes) -> bool:
    request = urllib.request.Request(f"http://{ip}:8080/v2/models/{model}/infer", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:
            return bool(json.loads(answer.read()).get("model_version") == version)
    except OSError:
        return False


def _edgemodel(name: str, store: str, path: str, sha: str, version: str, precision: str) -> str:
    return json.dumps({
        "apiVersion": "edgeai.dev/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": name, "labels": {"edgeai.dev/bench": "realnode"}},
        "spec": {
            "model": {"uri": f"{store}/{path}", "sha256": sha, "version": version},
            "targets": [{"name": "cpu", "accelerator": "cpu", "precision": precision,
                         "replicas": 1, "nodeSelector": {"kubernetes.io/hostname": NODE}}],
            "serving": {"probe": {"periodSeconds": 1, "failureThreshold": 2}},
        },
    })  # fmt: skip


def suite_realnode(size: str, work: Path) -> dict[str, Any]:
    import hashlib

    import digits
    import make_digits

    from edgemodel_operator import __version__

    if not (STATE / "kubeconfig").exists():
        subprocess.run([sys.executable, str(ROOT / "hack" / "devcluster.py"), "up"], check=True)
    env = {**os.environ, "ACCELERATORS": "cpu", "PLATFORMS": "amd64,arm64",
           "PY": sys.executable}  # fmt: skip
    subprocess.run([str(ROOT / "hack" / "images.sh")], env=env, check=True, stdout=sys.stderr)
    kit = subprocess.run([sys.executable, str(ROOT / "hack" / "imagekit.py"), "env"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    registry = kit.split("EDGEMODEL_REGISTRY=")[1].strip()
    servers = f"{registry}/edgemodel-server:{__version__}-{{accelerator}}"
    address = json.loads(_kubectl("get", "node", NODE, "-o", "json"))["status"]["addresses"]
    bridge = next(a["address"] for a in address if a["type"] == "InternalIP")

    root = work / "store"
    (root / "v1").mkdir(parents=True)
    (root / "v1" / "model.onnx").write_bytes(digits.build().model.read_bytes())
    make_digits.generate(root / "v2", seed=7)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    root.chmod(0o755)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((bridge, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = f"http://{bridge}:{server.server_address[1]}"
    sha = {v: hashlib.sha256((root / v / "model.onnx").read_bytes()).hexdigest()
           for v in ("v1", "v2")}  # fmt: skip
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                   "data": [0.0] * 64}]}).encode()  # fmt: skip

    node = Node()
    ns = f"bench-realnode-{uuid.uuid4().hex[:5]}"
    _kubectl("create", "namespace", ns)
    selector = "edgeai.dev/bench=realnode"
    common = {"EDGEMODEL_SERVER_IMAGE": servers, "EDGEMODEL_ACTIVE_PROBE": "true",
              "EDGEMODEL_SELECTOR": selector, "EDGEMODEL_NAMESPACES": ns}  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {}

    def timed(name: str, manifest: str, version: str) -> float:
        t0 = time.monotonic()
        _kubectl("apply", "-n", ns, "-f", "-", stdin=manifest)

        def cluster_ip() -> str | None:
            try:
                return _kubectl("get", "svc", f"{name}-cpu", "-n", ns, "-o",
                                "jsonpath={.spec.clusterIP}").strip() or None  # fmt: skip
            except subprocess.CalledProcessError:  # not created yet
                return None

        svc = wait_for(cluster_ip, timeout=60, what="the Service")
        wait_for(lambda: _answers(svc, name, version, body), timeout=300, every=0.1,
                 what=f"{name} answering as version {version}")  # fmt: skip
        return round(time.monotonic() - t0, 2)

    def remove(name: str) -> None:
        _kubectl("delete", "em", name, "-n", ns, "--wait=true", "--timeout=120s")
        wait_for(lambda: not _kubectl("get", "pods", "-n", ns, "-o", "name").strip(),
                 timeout=120, what="the pods gone")  # fmt: skip

    _kubectl("apply", "-f", str(ROOT / "crds"))  # `make cluster-up` alone does not serve it

    def run_mode(mode: str, extra: dict[str, str], precision: str) -> None:
        op = Operator(STATE / "kubeconfig", work / f"operator-{mode}.log", 2,
                      env={**common, **extra})  # fmt: skip
        op.start()
        try:
            for i in range(REPEATS[size]):
                name = f"{mode}-{i}"
                node.forget(registry)  # the server image and any model image
                before = node.content_bytes()
                cold = timed(name, _edgemodel(name, store, "v1/model.onnx", sha["v1"], "1",
                                              precision), "1")  # fmt: skip
                cold_bytes = node.content_bytes() - before
                before = node.content_bytes()
                update = timed(name, _edgemodel(name, store, "v2/model.onnx", sha["v2"], "2",
                                                precision), "2")  # fmt: skip
                update_bytes = node.content_bytes() - before
                remove(name)
                warm = timed(name, _edgemodel(name, store, "v1/model.onnx", sha["v1"], "1",
                                              precision), "1")  # fmt: skip
                remove(name)
                log(f"realnode {mode} run {i + 1}: cold {cold} s, update {update} s, warm {warm} s")
                results.setdefault(mode, []).append({
                    "cold_s": cold, "cold_pulled_bytes": cold_bytes, "warm_s": warm,
                    "update_s": update, "update_pulled_bytes": update_bytes,
                })  # fmt: skip
        finally:
            op.stop()

    try:
        run_mode("fetched", {}, "fp32")
        run_mode("built", {"EDGEMODEL_BUILDER": "registry",
                           "EDGEMODEL_REGISTRY_URL": f"{registry}/bench-realnode",
                           "EDGEMODEL_REGISTRY_INSECURE": "true",
                           "EDGEMODEL_WORK_DIR": str(work / "build")}, "fp32")  # fmt: skip
    finally:
        _kubectl("delete", "namespace", ns, "--wait=false")
        server.shutdown()

    def median(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[mode]))

    return {
        "node": NODE,
        "repeats": REPEATS[size],
        "model_bytes": (root / "v2" / "model.onnx").stat().st_size,
        "modes": {
            mode: {"runs": runs, **{f"median_{k}": median(mode, k) for k in runs[0]}}
            for mode, runs in results.items()
        },
        "note": "fetched: the pod runs the published server image and its init container "
        "fetches and verifies the model (an update pulls no image); built: the operator "
        "appends the model to the server image (an update pulls one layer). Times include "
        "the build, scheduling, the pull, the model load and the active probe",
    }
