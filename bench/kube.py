"""A benchmark's own local cluster (never the shared one), the operator as a subprocess,
and a counting proxy that tells how many API requests the operator makes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from common import ROOT, free_port, log, wait_for
from kubernetes import client, config

GROUP, VERSION, PLURAL = "edgeai.dev", "v1alpha1", "edgemodels"
CRD = ROOT / "crds" / "edgemodels.edgeai.dev.yaml"
SHARED_PORT_BASE = 16400
DEFAULT_PORT_BASE = 18400
# kwok renews 1,500 node Leases; when a loaded control plane delays those renewals past the
# upstream 50 s grace, nodes turn NotReady and their pods stay not Ready (kwok does not make
# them Ready again), which stalls whichever side is running. No suite relies on a missed
# heartbeat: offline nodes are made by a kwok stage (kwok.edgeai.dev/offline).
NODE_GRACE_SECONDS = 300


@dataclass
class BenchCluster:
    """hack/devcluster.py with a state dir outside the checkout and its own port base."""

    fleet: str
    port_base: int = int(os.environ.get("BENCH_PORT_BASE", str(DEFAULT_PORT_BASE)))
    state: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="edgemodel-bc-")))

    def _devcluster(self, command: str, *extra: str) -> None:
        if self.port_base == SHARED_PORT_BASE:
            raise RuntimeError("refusing to use port base 16400: that is the shared cluster")
        subprocess.run(
            [sys.executable, str(ROOT / "hack" / "devcluster.py"), command,
             f"--state-dir={self.state}", f"--port-base={self.port_base}", *extra],
            check=True,
        )  # fmt: skip

    def up(self) -> float:
        t0 = time.monotonic()
        # Simulated nodes only: the real node belongs to the shared cluster (one per machine).
        self._devcluster("up", f"--fleet={self.fleet}", "--real-nodes=0",
                         f"--node-grace-seconds={NODE_GRACE_SECONDS}")  # fmt: skip
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     "crd/edgemodels.edgeai.dev")  # fmt: skip
        # Established comes before the API server can list it ("storage is (re)initializing"):
        # an operator started before then spends its first seconds in retries.
        wait_for(self._lists_edgemodels, timeout=60, what="EdgeModels to be listable")
        return time.monotonic() - t0

    def _lists_edgemodels(self) -> bool:
        try:
            self.kubectl("get", "edgemodels", "-A")
        except RuntimeError:
            return False
        return True

    def down(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._devcluster("down")
        shutil.rmtree(self.state, ignore_errors=True)

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port_base + 43}"

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [str(self.state / "bin" / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, namespace: str, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(obj))

    @cached_property
    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name)

    def tls(self) -> ssl.SSLContext:
        pki = self.state / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def request_total(self) -> float:
        """Sum of apiserver_request_total over every client (the admin can read /metrics)."""
        with urllib.request.urlopen(f"https://{self.server}/metrics", context=self.tls()) as r:
            text = r.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("apiserver_request_total{")
        )

    def get_em(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        )

    def list_em(self, namespace: str) -> list[dict[str, Any]]:
        res = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return list(res["items"])


def condition(em: dict[str, Any], type_: str) -> str | None:
    for c in (em.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return str(c["status"])
    return None


def em_ready(em: dict[str, Any]) -> bool:
    status = em.get("status") or {}
    current = status.get("observedGeneration") == em["metadata"]["generation"]
    return current and condition(em, "Ready") == "True"


# --- the counting proxy --------------------------------------------------------------


class CountingProxy:
    """Plain HTTP on 127.0.0.1 in front of the apiserver (TLS with the admin certificate).

    Parses the client-to-server byte stream into requests (head + Content-Length body) and
    counts them by verb and resource; answers are piped back untouched, so watches stream."""

    def __init__(self, upstream_port: int, tls: ssl.SSLContext) -> None:
        self.upstream_port = upstream_port
        self.tls = tls
        self.port = free_port()
        self.counts: Counter[str] = Counter()
        self.user_agents: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    def _count(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        path, _, query = target.partition("?")
        parts = [p for p in path.split("/") if p]
        # /api/v1/namespaces/ns/pods/name -> pods ; /apis/g/v/namespaces/ns/r/name/status
        if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
            rest = parts[parts.index("namespaces") + 2 :]
        else:
            rest = parts[2:] if parts and parts[0] == "api" else parts[3:]
        resource = "/".join(rest[:1] + rest[2:3]) or path
        verb = "WATCH" if "watch=true" in query or "watch=1" in query else method
        agent = next(
            (x.split(":", 1)[1].strip() for x in lines if x.lower().startswith("user-agent:")),
            "",
        )
        with self._lock:
            self.counts[f"{verb} {resource}"] += 1
            self.user_agents[agent.split(" ")[0]] += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port, ssl=self.tls, server_hostname="127.0.0.1"
            )
        except OSError:
            writer.close()
            return

        async def up() -> None:
            with contextlib.suppress(Exception):
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    self._count(head)
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    uw.write(head)
                    if length:
                        uw.write(await reader.readexactly(length))
                    await uw.drain()
            uw.close()

        async def down() -> None:
            with contextlib.suppress(Exception):
                while chunk := await ur.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            writer.close()

        await asyncio.gather(up(), down())

    def kubeconfig(self, path: Path) -> Path:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "p", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "p", "user": {}}],
            "contexts": [{"name": "p", "context": {"cluster": "p", "user": "p"}}],
            "current-context": "p",
        }
        path.write_text(json.dumps(cfg))
        return path


# --- the operator ------------------------------------------------------------------


@dataclass
class Operator:
    kubeconfig: Path
    logfile: Path
    resync_seconds: int
    namespaces: str = ""
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # more EDGEMODEL_* settings
    start_s: float = 0.0  # from the process start until its first lists were in

    def start(self) -> None:
        port = free_port()
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            EDGEMODEL_HEALTH_ADDRESS=f"127.0.0.1:{port}",
            EDGEMODEL_RESYNC_SECONDS=str(self.resync_seconds),
            EDGEMODEL_LOG_LEVEL="WARNING",
        )
        if self.namespaces:
            env["EDGEMODEL_NAMESPACES"] = self.namespaces
        env.update(self.env)
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgemodel_operator"], env=env, stdout=out, stderr=out
            )
        url = f"http://127.0.0.1:{port}/healthz"

        def healthy() -> bool:
            if self.proc and self.proc.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the operator exited with {self.proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        t0 = time.monotonic()
        wait_for(healthy, timeout=60, what="the operator's liveness")
        # Alive is not ready: kopf first lists every node and child and runs each through
        # the indices (about 18 s for 1,500 nodes here) before any handler acts. A site's
        # operator has long done that when a model is applied, so the clock starts after.
        wait_for(self._settled, timeout=180, what="the operator's first lists", every=0.0)
        self.start_s = round(time.monotonic() - t0, 1)
        log(f"operator running (pid {self.proc.pid if self.proc else '?'}), "
            f"ready in {self.start_s} s")  # fmt: skip

    def _settled(self) -> bool:
        """Less than a tenth of a second of CPU in the last second."""
        before = self.cpu_seconds()
        time.sleep(1.0)
        return self.cpu_seconds() - before < 0.1

    def peak_rss_mib(self) -> float:
        if not self.proc:
            return float("nan")
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def cpu_seconds(self) -> float:
        if not self.proc:
            return float("nan")
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
