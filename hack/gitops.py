#!/usr/bin/env python3
"""A live Argo CD next to the local edge cluster, driving EdgeModels from Git.

Argo CD's application controller, ApplicationSet controller and repo server run as host
processes (built once by hack/build-argocd.sh), with Debian's redis-server and a git
daemon serving two bare repositories on loopback: `edgemodel-operator.git` (this
checkout's Helm chart, republished on every `up`) and `sites.git` (the site repository
that tests and users commit EdgeModels to). The project's health check
(deploy/argocd/health/edgeai.dev/EdgeModel/health.lua) is installed through argocd-cm.
Standard library only, so it runs before any venv.

    gitops.py up        start (or reuse) on the running dev cluster
    gitops.py status    print what runs, the repositories and the Applications
    gitops.py info      the same as JSON (for tests)
    gitops.py down      stop the processes and delete the state (the cluster keeps the
                        Argo CD objects; `make cluster-down` removes everything)

Ports: DEVCLUSTER_PORT_BASE + 160 .. + 169, all on 127.0.0.1 (except the application
controller's metrics, which Argo CD always binds on every address). State (repositories,
logs, pids) lives in <devcluster state>/gitops/.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devcluster import Ports as ClusterPorts

ROOT = Path(__file__).resolve().parent.parent
ARGOCD_VERSION = "v3.6.1"
NAMESPACE = "argocd"
HEALTH_LUA = ROOT / "deploy" / "argocd" / "health" / "edgeai.dev" / "EdgeModel" / "health.lua"
CHART = ROOT / "charts" / "edgemodel-operator"
FIELD_MANAGER = "edgemodel-gitops"
# Start order; stopped in reverse.
COMPONENTS = (
    "redis-server",
    "git-daemon",
    "argocd-repo-server",
    "argocd-application-controller",
    "argocd-applicationset-controller",
)
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "edgemodel gitops",
    "GIT_AUTHOR_EMAIL": "gitops@edgemodel.local",
    "GIT_COMMITTER_NAME": "edgemodel gitops",
    "GIT_COMMITTER_EMAIL": "gitops@edgemodel.local",
}
# Seconds between two comparisons of every Application with Git (Argo CD's default is 180;
# tests force a hard refresh after each push instead of waiting for it).
APP_RESYNC = 30


class GitOpsError(RuntimeError):
    """A problem a person can act on; printed without a traceback."""


@dataclass(frozen=True)
class Ports:
    git: int
    redis: int
    repo_server: int
    repo_server_metrics: int
    controller_metrics: int
    appset_metrics: int
    appset_probe: int
    appset_webhook: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(*(base + 160 + i for i in range(8)))

    def named(self) -> dict[str, int]:
        return {
            "git daemon": self.git,
            "redis": self.redis,
            "repo server": self.repo_server,
            "repo server metrics": self.repo_server_metrics,
            "application controller metrics": self.controller_metrics,
            "applicationset controller metrics": self.appset_metrics,
            "applicationset controller probe": self.appset_probe,
            "applicationset controller webhook": self.appset_webhook,
        }


@dataclass(frozen=True)
class Layout:
    cluster_state: Path
    ports: Ports
    apiserver_port: int

    @property
    def state(self) -> Path:
        return self.cluster_state / "gitops"

    @property
    def kubeconfig(self) -> Path:
        return self.cluster_state / "kubeconfig"

    @property
    def kubectl(self) -> Path:
        return self.cluster_state / "bin" / "kubectl"

    @property
    def git_dir(self) -> Path:
        return self.state / "git"

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def pidfile(self, component: str) -> Path:
        return self.state / "pids" / f"{component}.pid"

    def repo_url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.ports.git}/{name}.git"

    @property
    def cluster_server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def askpass_socket(self) -> Path:
        # Unix socket paths are limited to about 100 bytes; fall back to the temp dir.
        path = self.run / "askpass.sock"
        if len(str(path)) < 100:
            return path
        key = hashlib.sha256(str(self.state).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"edgemodel-gitops-{key}.sock"


def log(msg: str) -> None:
    print(f"gitops: {msg}", file=sys.stderr, flush=True)


# --- tools ---------------------------------------------------------------------------------


def built(script: str) -> Path:
    """Run a hack/build-*.sh (which builds on first use) and return the path it prints."""
    proc = subprocess.run([str(ROOT / "hack" / script)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise GitOpsError(f"hack/{script} failed (its output is above)")
    return Path(proc.stdout.strip().splitlines()[-1])


def run(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    proc = subprocess.run(
        list(args),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_IDENTITY},
    )
    if proc.returncode != 0:
        stderr = proc.stderr.strip()
        if len(stderr) > 1500:
            stderr = stderr[:700] + " [...] " + stderr[-700:]
        raise GitOpsError(f"{' '.join(args[:3])} ... failed: {stderr}")
    return proc.stdout


def kubectl(layout: Layout, *args: str, stdin: str | None = None) -> str:
    return run(str(layout.kubectl), f"--kubeconfig={layout.kubeconfig}", *args, stdin=stdin)


def apply(layout: Layout, objects: list[dict[str, object]]) -> None:
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kubectl(layout, "apply", "--server-side", "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=doc)  # fmt: skip


# --- processes -----------------------------------------------------------------------------


def runs(pid: int, component: str) -> bool:
    """True when pid is a live (not zombie) process of this component. redis-server rewrites
    its command line to "redis-server <address>", hence the split on blanks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    argv0 = cmdline.split(b"\0", 1)[0].decode(errors="replace").split(" ", 1)[0]
    return Path(argv0).name == component


def pid_alive(layout: Layout, component: str) -> int | None:
    try:
        pid = int(layout.pidfile(component).read_text())
    except (OSError, ValueError):
        return None
    return pid if runs(pid, component) else None


def start(
    layout: Layout, component: str, binary: Path, args: list[str], env: dict[str, str]
) -> None:
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.pidfile(component).parent.mkdir(parents=True, exist_ok=True)
    with (layout.logs / f"{component}.log").open("ab") as logfile:
        proc = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its children
            cwd=layout.run,
            env=env,
        )
    layout.pidfile(component).write_text(str(proc.pid))
    deadline = time.monotonic() + 5
    while not runs(proc.pid, component) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def log_tail(layout: Layout, component: str, lines: int = 15) -> str:
    try:
        text = (layout.logs / f"{component}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_healthy(layout: Layout, component: str, probe, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(layout, component):
            raise GitOpsError(
                f"{component} exited during start-up; last lines of its log "
                f"({layout.logs / (component + '.log')}):\n{log_tail(layout, component)}"
            )
        if probe():
            return
        time.sleep(0.25)
    raise GitOpsError(
        f"{component} did not become healthy within {timeout:.0f}s; last lines of its log:\n"
        f"{log_tail(layout, component)}"
    )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def tcp_answers(port: int, send: bytes = b"", expect: bytes = b"") -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            if send:
                s.sendall(send)
                return s.recv(64).startswith(expect)
            return True
    except OSError:
        return False


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
        raise GitOpsError(
            "ports already taken by another program:\n  - " + "\n  - ".join(taken)
            + "\nstop that program or choose other ports with DEVCLUSTER_PORT_BASE"
            " (GitOps uses base+160 .. base+167)"
        )  # fmt: skip


# --- Argo CD objects -----------------------------------------------------------------------


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def argocd_objects(layout: Layout) -> list[dict[str, object]]:
    part_of = {"app.kubernetes.io/part-of": "argocd"}
    pki = layout.cluster_state / "pki"
    tls = {"caData": b64(pki / "ca.crt"), "certData": b64(pki / "admin.crt"),
           "keyData": b64(pki / "admin.key")}  # fmt: skip

    def configmap(name: str, data: dict[str, str]) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": part_of},
            "data": data,
        }

    return [
        configmap(
            "argocd-cm",
            {
                # The project's health check, verbatim.
                "resource.customizations.health.edgeai.dev_EdgeModel": HEALTH_LUA.read_text(),
                # Processes outside the cluster have no in-cluster service account; the
                # cluster is registered below by its loopback address instead.
                "cluster.inClusterEnabled": "false",
                "application.resourceTrackingMethod": "annotation",
                "timeout.reconciliation": f"{APP_RESYNC}s",
            },
        ),
        configmap("argocd-rbac-cm", {"policy.default": "role:readonly"}),
        configmap("argocd-cmd-params-cm", {}),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "cluster-local",
                "namespace": NAMESPACE,
                "labels": {**part_of, "argocd.argoproj.io/secret-type": "cluster"},
            },
            "stringData": {
                "name": "local",
                "server": layout.cluster_server,
                "config": json.dumps({"tlsClientConfig": tls}),
            },
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        },
    ]


def install_objects(layout: Layout, argocd_dir: Path) -> None:
    crds = sorted((argocd_dir / "crds").glob("*.yaml"))
    for crd in crds:
        kubectl(layout, "apply", "--server-side", "--force-conflicts",
                f"--field-manager={FIELD_MANAGER}", "-f", str(crd))  # fmt: skip
    names = ["applications.argoproj.io", "applicationsets.argoproj.io", "appprojects.argoproj.io"]
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + 60

    def established(name: str) -> bool:
        # Neither `kubectl wait` nor a jsonpath filter copes with a CRD that has no
        # conditions yet: both fail, so a failure here means "not yet".
        try:
            return kubectl(layout, "get", "crd", name, "-o", f"jsonpath={jsonpath}") == "True"
        except GitOpsError:
            return False

    while not all(established(n) for n in names):
        if time.monotonic() > deadline:
            raise GitOpsError(f"the Argo CD CRDs were not established within 60s: {names}")
        time.sleep(0.25)
    apply(layout, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
    apply(layout, argocd_objects(layout))
    # The server key signs sessions; made once, never rotated by a later `up`.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "argocd-secret", "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/part-of": "argocd"}},
        "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
    }  # fmt: skip
    try:
        kubectl(layout, "get", "secret", "argocd-secret", "-n", NAMESPACE, "-o", "name")
    except GitOpsError:
        kubectl(layout, "create", "-f", "-", stdin=json.dumps(secret))


# --- Git -----------------------------------------------------------------------------------


def ensure_bare(layout: Layout, name: str) -> Path:
    bare = layout.git_dir / f"{name}.git"
    if not (bare / "HEAD").exists():
        bare.parent.mkdir(parents=True, exist_ok=True)
        run("git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    return bare


def publish(layout: Layout, name: str, files: dict[str, Path | str], message: str) -> str:
    """Make the repository's main branch hold exactly these files (path -> file, folder or
    text); commit and push only when something changed. Returns the commit of main."""
    bare = ensure_bare(layout, name)
    with tempfile.TemporaryDirectory(prefix=f"gitops-{name}-") as tmp:
        work = Path(tmp) / "work"
        run("git", "clone", "--quiet", str(bare), str(work))
        for child in work.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for rel, content in files.items():
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                target.write_text(content)
            elif content.is_dir():
                shutil.copytree(content, target)
            else:
                shutil.copy2(content, target)
        run("git", "add", "-A", cwd=work)
        if run("git", "status", "--porcelain", cwd=work).strip():
            run("git", "commit", "--quiet", "-m", message, cwd=work)
            run("git", "push", "--quiet", "origin", "HEAD:main", cwd=work)
        return run("git", "rev-parse", "HEAD", cwd=work).strip()


SITES_README = """\
# Site repository

One folder per site: `sites/<site>/models/` holds the EdgeModels Argo CD syncs there.
Served by hack/gitops.py's git daemon; tests commit here.
"""


def publish_repositories(layout: Layout) -> None:
    publish(layout, "edgemodel-operator", {"charts/edgemodel-operator": CHART},
            "Publish the edgemodel-operator chart from the checkout")  # fmt: skip
    bare = ensure_bare(layout, "sites")
    has_main = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "--verify", "-q",
                               "main"], capture_output=True).returncode == 0  # fmt: skip
    if not has_main:
        publish(layout, "sites", {"README.md": SITES_README}, "Start the site repository")


# --- commands --------------------------------------------------------------------------


def running_components(layout: Layout) -> dict[str, int | None]:
    return {c: pid_alive(layout, c) for c in COMPONENTS}


def check_cluster(layout: Layout) -> None:
    if not layout.kubeconfig.exists() or not layout.kubectl.exists():
        raise GitOpsError(
            f"no dev cluster in {layout.cluster_state}: start it first (make cluster-up)"
        )
    try:
        kubectl(layout, "get", "--raw", "/readyz")
    except GitOpsError as err:
        raise GitOpsError(f"the dev cluster does not answer ({err}); run make cluster-up") from err
    if not shutil.which("git"):
        raise GitOpsError("git is required (Debian package git)")


def process_env(layout: Layout, argocd_dir: Path, helm: Path) -> dict[str, str]:
    run_dir = layout.run
    for sub in ("tmp", "gpg", "tls", "ssh", "home"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    (run_dir / "gpg").chmod(0o700)
    path = os.pathsep.join([str(argocd_dir / "bin"), str(helm.parent),
                            str(layout.kubectl.parent), os.environ.get("PATH", "")])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGOCD_", "KUBECONFIG"))}
    return {
        **env,
        "PATH": path,
        "HOME": str(run_dir / "home"),  # no user ~/.gitconfig or helm settings leak in
        "TMPDIR": str(run_dir / "tmp"),
        "ARGOCD_GPG_ENABLED": "false",
        "ARGOCD_GNUPGHOME": str(run_dir / "gpg"),
        "ARGOCD_TLS_DATA_PATH": str(run_dir / "tls"),
        "ARGOCD_SSH_DATA_PATH": str(run_dir / "ssh"),
        "ARGOCD_ASK_PASS_SOCK": str(layout.askpass_socket),
    }


def start_processes(layout: Layout, argocd_dir: Path, helm: Path) -> None:
    p = layout.ports
    env = process_env(layout, argocd_dir, helm)
    redis_root = argocd_dir / "redis"
    redis_env = {**env, "LD_LIBRARY_PATH": str(redis_root / "usr" / "lib" / "x86_64-linux-gnu")}
    start(layout, "redis-server", redis_root / "usr" / "bin" / "redis-server", [
        "--bind", "127.0.0.1", "--port", str(p.redis), "--save", "", "--appendonly", "no",
        "--dir", str(layout.run), "--protected-mode", "yes",
    ], redis_env)  # fmt: skip
    wait_healthy(layout, "redis-server", lambda: tcp_answers(p.redis, b"PING\r\n", b"+PONG"), 20)

    git_daemon = Path(run("git", "--exec-path").strip()) / "git-daemon"
    start(layout, "git-daemon", git_daemon, [
        "--reuseaddr", "--export-all", f"--base-path={layout.git_dir}", "--listen=127.0.0.1",
        f"--port={p.git}", "--informative-errors", str(layout.git_dir),
    ], env)  # fmt: skip
    sites = layout.repo_url("sites")
    wait_healthy(layout, "git-daemon", lambda: subprocess.run(
        ["git", "ls-remote", sites], capture_output=True).returncode == 0, 20)  # fmt: skip

    bin_dir = argocd_dir / "bin"
    redis = f"127.0.0.1:{p.redis}"
    repo_server = f"127.0.0.1:{p.repo_server}"
    start(layout, "argocd-repo-server", bin_dir / "argocd-repo-server", [
        "--address", "127.0.0.1", "--port", str(p.repo_server),
        "--metrics-address", "127.0.0.1", "--metrics-port", str(p.repo_server_metrics),
        "--disable-tls", "--client-ca-path", "", "--redis", redis,
        # Branch heads are cached this long; tests hard-refresh after a push anyway.
        "--revision-cache-expiration", "10s", "--parallelismlimit", "2",
        "--logformat", "text",
    ], env)  # fmt: skip
    wait_healthy(
        layout, "argocd-repo-server",
        lambda: http_ok(f"http://127.0.0.1:{p.repo_server_metrics}/healthz"), 60,
    )  # fmt: skip

    kubeconfig = str(layout.kubeconfig)
    start(layout, "argocd-application-controller", bin_dir / "argocd-application-controller", [
        "--kubeconfig", kubeconfig, "--namespace", NAMESPACE, "--redis", redis,
        "--repo-server", repo_server, "--repo-server-plaintext",
        "--metrics-port", str(p.controller_metrics),
        # timeout.reconciliation reaches the controller only through these flags.
        "--app-resync", str(APP_RESYNC), "--app-resync-jitter", "0",
        "--status-processors", "4", "--operation-processors", "2",
        # Keep each resource's health in the Application's status (not only in redis),
        # where kubectl and the tests can read it without an Argo CD API server.
        "--persist-resource-health", "--logformat", "text",
    ], env)  # fmt: skip
    wait_healthy(
        layout, "argocd-application-controller",
        lambda: http_ok(f"http://127.0.0.1:{p.controller_metrics}/healthz"), 60,
    )  # fmt: skip

    start(layout, "argocd-applicationset-controller",
          bin_dir / "argocd-applicationset-controller", [
        "--kubeconfig", kubeconfig, "--namespace", NAMESPACE,
        "--argocd-repo-server", repo_server, "--repo-server-plaintext",
        "--metrics-addr", f"127.0.0.1:{p.appset_metrics}",
        "--probe-addr", f"127.0.0.1:{p.appset_probe}",
        "--webhook-addr", f"127.0.0.1:{p.appset_webhook}",
        # RollingSync: an ApplicationSet rolls a change out group by group (site by site).
        "--enable-progressive-syncs", "--logformat", "text",
        # Wait this long for Applications to notice a new commit before refreshing them.
        "--refresh-grace-period-seconds", "2",
    ], {**env, "KUBECONFIG": kubeconfig})  # controller-runtime reads only the variable  # fmt: skip
    wait_healthy(
        layout, "argocd-applicationset-controller",
        # It registers no health checks on its probe address; metrics come up with it.
        lambda: http_ok(f"http://127.0.0.1:{p.appset_metrics}/metrics"), 60,
    )  # fmt: skip


def up(layout: Layout) -> None:
    t0 = time.monotonic()
    check_cluster(layout)
    argocd_dir = built("build-argocd.sh")
    helm = built("build-helm.sh")
    running = running_components(layout)
    install_objects(layout, argocd_dir)
    publish_repositories(layout)
    if all(running.values()):
        log("already running; objects and the chart repository are up to date")
    else:
        if any(running.values()):
            log("a previous Argo CD is half up; stopping it first")
            stop_processes(layout)
        check_ports_free(layout.ports)
        start_processes(layout, argocd_dir, helm)
    write_env(layout, argocd_dir)
    log(f"Argo CD {ARGOCD_VERSION} is up in {time.monotonic() - t0:.1f}s; "
        f"site repository {layout.repo_url('sites')}")  # fmt: skip


def info(layout: Layout) -> dict[str, object]:
    p = layout.ports
    return {
        "argocdVersion": ARGOCD_VERSION,
        "namespace": NAMESPACE,
        "clusterServer": layout.cluster_server,
        "repositories": {
            name: {"url": layout.repo_url(name), "path": str(layout.git_dir / f"{name}.git")}
            for name in ("sites", "edgemodel-operator")
        },
        "controllerMetrics": f"http://127.0.0.1:{p.controller_metrics}/metrics",
        "applicationSetMetrics": f"http://127.0.0.1:{p.appset_metrics}/metrics",
        "logs": str(layout.logs),
        "running": {c: pid is not None for c, pid in running_components(layout).items()},
    }


def write_env(layout: Layout, argocd_dir: Path) -> None:
    """<state>/gitops/env: `source` it for the argocd CLI (e.g. `argocd admin`) and the URLs."""
    (layout.state / "env").write_text(
        f'export PATH="{argocd_dir / "bin"}:$PATH"\n'
        f'export GITOPS_SITES_REPO="{layout.repo_url("sites")}"\n'
        f'export GITOPS_CHART_REPO="{layout.repo_url("edgemodel-operator")}"\n'
        f'export GITOPS_CLUSTER_SERVER="{layout.cluster_server}"\n'
    )
    (layout.state / "info.json").write_text(json.dumps(info(layout), indent=2) + "\n")


def stop_processes(layout: Layout) -> list[str]:
    stopped = []
    for component in reversed(COMPONENTS):
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
    for component in COMPONENTS:
        layout.pidfile(component).unlink(missing_ok=True)
    return [c for c, _ in stopped]


def down(layout: Layout, quiet: bool = False) -> None:
    stopped = stop_processes(layout)
    layout.askpass_socket.unlink(missing_ok=True)
    shutil.rmtree(layout.state, ignore_errors=True)
    if not quiet or stopped:
        log(f"stopped {', '.join(stopped) or 'nothing (Argo CD was not running)'}")


def status(layout: Layout) -> int:
    running = running_components(layout)
    for component, pid in running.items():
        print(f"{component:<34} {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
    if not all(running.values()):
        return 1
    print(f"\nsite repository   {layout.repo_url('sites')}   (push to {layout.git_dir}/sites.git)")
    print(f"chart repository  {layout.repo_url('edgemodel-operator')}")
    print(f"cluster           {layout.cluster_server}\n")
    with contextlib.suppress(GitOpsError):
        columns = ("custom-columns=APPLICATION:.metadata.name,SYNC:.status.sync.status,"
                   "HEALTH:.status.health.status,REVISIONS:.status.sync.revisions")  # fmt: skip
        print(kubectl(layout, "get", "applications.argoproj.io", "-n", NAMESPACE, "-o", columns),
              end="")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "info"])
    parser.add_argument(
        "--state-dir", default=os.environ.get("DEVCLUSTER_STATE", str(ROOT / ".devcluster")),
        help="the dev cluster's state directory (GitOps keeps its own under gitops/)",
    )  # fmt: skip
    parser.add_argument(
        "--port-base", type=int, default=int(os.environ.get("DEVCLUSTER_PORT_BASE", "16400"))
    )
    parser.add_argument("--quiet", action="store_true", help="down: say nothing if nothing ran")
    args = parser.parse_args(argv)
    layout = Layout(
        cluster_state=Path(args.state_dir).resolve(),
        ports=Ports.from_base(args.port_base),
        apiserver_port=ClusterPorts.from_base(args.port_base).apiserver,
    )
    try:
        if args.command == "up":
            up(layout)
        elif args.command == "down":
            down(layout, quiet=args.quiet)
        elif args.command == "info":
            print(json.dumps(info(layout), indent=2))
            return 0 if all(running_components(layout).values()) else 1
        else:
            return status(layout)
    except GitOpsError as err:
        log(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
