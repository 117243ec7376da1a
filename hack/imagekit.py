#!/usr/bin/env python3
"""Container images without a Docker engine: podman's Docker API, a local registry, a
local Debian base image and the model server's wheels, for tests and local builds.

    imagekit.py up              start (or reuse) the podman Docker-API service and the registry
    imagekit.py base [--arch A] build the Debian bookworm base once (cached) and import it:
                                localhost/edgemodel-base:bookworm (amd64) or ...-arm64
    imagekit.py emulation       run arm64 programs (qemu 10 via binfmt_misc): arm64 builds
                                and smoke tests; `emulation --off` removes the registration
    imagekit.py wheels operator the operator's own wheels, for its image (Dockerfile); the
                                model servers' come with their profiles (make images)
    imagekit.py env             print DOCKER_HOST and EDGEMODEL_REGISTRY as shell exports
    imagekit.py status          say what runs
    imagekit.py down            stop the service and the registry, delete .imagekit/

State (configs, podman storage, registry storage, sockets, logs, pids) lives in
.imagekit/ at the repository root. The base rootfs and the wheels are cached outside the
checkout, in ${XDG_CACHE_HOME:-~/.cache}/edgemodel-operator/. Podman runs rootful (as
root), with its own storage, so it never touches another podman's images.

Standard library only, so it runs before any venv. Environment:
IMAGEKIT_REGISTRY_PORT (default 16500), IMAGEKIT_STATE (default .imagekit/),
IMAGEKIT_MIRROR (a Debian mirror URL; default: the one in the machine's apt sources),
EDGEMODEL_CACHE (the cache folder).
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
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".imagekit"
BASE_IMAGE = "localhost/edgemodel-base:bookworm"
SUITE = "bookworm"
BASE_PYTHON = "3.11"  # Debian bookworm's python3; the wheels must match it
BASE_GLIBC = 36  # bookworm's glibc 2.36: wheels up to manylinux_2_36 run on the base
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Everything a container never reads: docs, man pages, translations, apt's lists and caches.
TRIM = (
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/lintian/*",
    "usr/share/locale/*",
    "usr/share/i18n/*",
    "usr/lib/locale/*",
    "var/lib/apt/lists/*",
    "var/cache/apt/*",
    "var/cache/debconf/*-old",
    "var/log/*",
    "tmp/*",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PREREQUISITES = {
    "podman": "podman",
    "runc": "runc",
    "docker-registry": "docker-registry",
    "iptables": "iptables",
    "debootstrap": "debootstrap",
}


class KitError(RuntimeError):
    """A problem a person can act on; printed without a traceback."""


def log(message: str) -> None:
    print(f"imagekit: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    explicit = os.environ.get("EDGEMODEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgemodel-operator"


@dataclass(frozen=True)
class Layout:
    state: Path
    registry_port: int

    @property
    def socket(self) -> Path:
        return self.state / "podman.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def storage(self) -> Path:
        """podman's images: kept in the cache across restarts, so builds reuse layers."""
        return cache_root() / "imagekit" / "storage"

    @property
    def registry_data(self) -> Path:
        """The registry's blobs and manifests: kept in the cache, like a site registry."""
        return cache_root() / "imagekit" / "registry"

    def podman_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = str(self.state / "containers.conf")
        env["CONTAINERS_REGISTRIES_CONF"] = str(self.state / "registries.conf")
        env["CONTAINERS_STORAGE_CONF"] = str(self.state / "storage.conf")
        env.pop("DOCKER_HOST", None)
        env.pop("CONTAINER_HOST", None)
        return env


def layout() -> Layout:
    raw = os.environ.get("IMAGEKIT_REGISTRY_PORT", "16500")
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise KitError(f"IMAGEKIT_REGISTRY_PORT must be a port number, got {raw!r}")
    state = Path(os.environ.get("IMAGEKIT_STATE") or STATE).absolute()
    return Layout(state=state, registry_port=int(raw))


# ---------------------------------------------------------------------------- helpers


def require(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        packages = " ".join(PREREQUISITES.get(n, n) for n in missing)
        raise KitError(
            f"{', '.join(missing)} not found on PATH; install the Debian packages "
            f"({packages}) with hack/install-deps.sh (or make deps)"
        )


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise KitError(f"{what} needs root (podman runs rootful here); run it as root or with sudo")


def pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    # A zombie or a recycled pid of another program does not count.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    expected = pid_file.stem.encode()
    return pid if expected in cmdline else None


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def unix_get(path: Path, url_path: str, timeout: float = 2.0) -> int | None:
    """Status of a GET over a unix socket (the podman API), None when nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(f"GET {url_path} HTTP/1.0\r\nHost: d\r\n\r\n".encode())
            head = sock.recv(64).decode("latin-1")
    except OSError:
        return None
    parts = head.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def wait_for(check: object, what: str, log_file: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    tail = ""
    with contextlib.suppress(OSError):
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
    raise KitError(
        f"{what} did not come up within {timeout:.0f}s; last lines of {log_file}:\n{tail}"
    )


def start(args: list[str], log_file: Path, pid_file: Path, env: dict[str, str]) -> int:
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=ROOT,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process.pid


def stop(pid_file: Path, name: str) -> None:
    pid = pid_alive(pid_file)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and pid_alive(pid_file) is not None:
            time.sleep(0.1)
        if pid_alive(pid_file) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log(f"stopped {name} (pid {pid})")
    pid_file.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- configs


def write_configs(lay: Layout) -> None:
    state = lay.state
    for sub in ("run", "tmp", "networks"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    lay.storage.mkdir(parents=True, exist_ok=True)
    lay.registry_data.mkdir(parents=True, exist_ok=True)
    # The Docker API service runs containers with runc and cgroupfs, logs events to a
    # file and caps ulimits: what these machines (no systemd, a container's limits) need.
    (state / "containers.conf").write_text(
        "# Written by hack/imagekit.py\n"
        "[containers]\n"
        'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        "\n"
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{state / "run" / "events.log"}"\n'
        f'tmp_dir = "{state / "tmp"}"\n'
        "\n"
        "[network]\n"
        'network_backend = "netavark"\n'
        f'network_config_dir = "{state / "networks"}"\n'
    )
    (state / "storage.conf").write_text(
        "# Written by hack/imagekit.py: podman storage of its own, inside .imagekit/\n"
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{lay.storage}"\n'
        f'runroot = "{state / "run"}"\n'
    )
    (state / "registries.conf").write_text(
        "# Written by hack/imagekit.py: the local registry speaks plain HTTP\n"
        "unqualified-search-registries = []\n"
        "\n"
        "[[registry]]\n"
        f'location = "{lay.registry}"\n'
        "insecure = true\n"
    )
    (state / "registry.yml").write_text(
        "# Written by hack/imagekit.py\n"
        "version: 0.1\n"
        "log:\n"
        "  level: warn\n"
        "storage:\n"
        "  filesystem:\n"
        f"    rootdirectory: {lay.registry_data}\n"
        "  delete:\n"
        "    enabled: true\n"
        "http:\n"
        f"  addr: {lay.registry}\n"
    )


# ---------------------------------------------------------------------------- commands


def podman_ready(lay: Layout) -> bool:
    return unix_get(lay.socket, "/_ping") == 200


def registry_ready(lay: Layout) -> bool:
    return http_status(f"http://{lay.registry}/v2/") == 200


def cmd_up(lay: Layout) -> None:
    require("podman", "runc", "iptables", "docker-registry")
    require_root("imagekit up")
    if len(str(lay.socket)) > 100:
        raise KitError(
            f"the socket path {lay.socket} is too long for a unix socket; move the checkout"
        )
    podman_pid = lay.state / "podman.pid"
    registry_pid = lay.state / "docker-registry.pid"
    registry_running = pid_alive(registry_pid) is not None and registry_ready(lay)
    if not registry_running and port_taken(lay.registry_port):
        raise KitError(
            f"port {lay.registry_port} on 127.0.0.1 is taken by another program; stop it "
            f"or choose another port with IMAGEKIT_REGISTRY_PORT"
        )
    lay.state.mkdir(parents=True, exist_ok=True)
    write_configs(lay)

    if pid_alive(podman_pid) is not None and podman_ready(lay):
        log(f"reusing the podman API service on {lay.docker_host}")
    else:
        stop(podman_pid, "a stale podman service")
        lay.socket.unlink(missing_ok=True)
        log_file = lay.state / "podman.log"
        start(
            ["podman", "system", "service", "--time=0", lay.docker_host],
            log_file,
            podman_pid,
            lay.podman_env(),
        )
        wait_for(lambda: podman_ready(lay), "the podman API service", log_file)
        log(f"started the podman API service on {lay.docker_host}")

    if registry_running:
        log(f"reusing the registry on {lay.registry}")
    else:
        stop(registry_pid, "a stale registry")
        log_file = lay.state / "docker-registry.log"
        start(
            ["docker-registry", "serve", str(lay.state / "registry.yml")],
            log_file,
            registry_pid,
            dict(os.environ),
        )
        wait_for(lambda: registry_ready(lay), "the registry", log_file)
        log(f"started the registry on {lay.registry}")


def cmd_down(lay: Layout) -> None:
    stop(lay.state / "podman.pid", "the podman API service")
    stop(lay.state / "docker-registry.pid", "the registry")
    if lay.state.exists():
        # Containers the service left behind hold overlay mounts in the storage.
        if (lay.state / "storage.conf").exists() and shutil.which("podman"):
            subprocess.run(
                ["podman", "rm", "--all", "--force"],
                env=lay.podman_env(),
                capture_output=True,
                check=False,
            )
        # The images (podman's storage) and the registry's content stay in the cache.
        with contextlib.suppress(FileNotFoundError):
            mounts = Path("/proc/self/mounts").read_text().splitlines()
            for line in reversed(mounts):
                target = line.split()[1]
                if target.startswith((f"{lay.state}/", f"{lay.storage}/")):
                    subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        shutil.rmtree(lay.state, ignore_errors=True)
        log(f"deleted {lay.state} (images and the registry's content stay in {lay.storage.parent})")


def cmd_env(lay: Layout) -> None:
    print(f"export DOCKER_HOST={lay.docker_host}")
    print(f"export EDGEMODEL_REGISTRY={lay.registry}")


def cmd_status(lay: Layout) -> int:
    ok = True
    for name, pid_file, ready in (
        ("podman API service", lay.state / "podman.pid", podman_ready(lay)),
        ("registry", lay.state / "docker-registry.pid", registry_ready(lay)),
    ):
        pid = pid_alive(pid_file)
        state = "ready" if ready and pid else ("running, not answering" if pid else "stopped")
        ok = ok and bool(ready and pid)
        print(f"{name:20} {state}" + (f" (pid {pid})" if pid else ""))
    return 0 if ok else 1


# ---------------------------------------------------------------------------- base


def apt_mirror() -> str:
    """The Debian mirror of the machine's apt sources (deb822 or one-line format)."""
    explicit = os.environ.get("IMAGEKIT_MIRROR")
    if explicit:
        return explicit.rstrip("/")
    candidates: list[tuple[str, str]] = []  # (uri, suites)
    sources = Path("/etc/apt/sources.list.d")
    files = sorted(sources.glob("*.sources")) if sources.is_dir() else []
    for path in files:
        with contextlib.suppress(OSError):
            for stanza in path.read_text().split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.lstrip().startswith("#"):
                        key, _, value = line.partition(":")
                        fields[key.strip().lower()] = value.strip()
                for uri in fields.get("uris", "").split():
                    candidates.append((uri, fields.get("suites", "")))
    lists = [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]
    for path in lists:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) >= 3 and words[0] == "deb":
                    rest = [w for w in words[1:] if not w.startswith("[")]
                    if len(rest) >= 2:
                        candidates.append((rest[0], rest[1]))
    for uri, suites in candidates:
        if SUITE in suites.split() and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def base_recipe(arch: str = "amd64") -> str:
    """What the base is made of; its hash names the cached tarball."""
    return json.dumps(
        {
            "suite": SUITE,
            "variant": "minbase",
            "include": BASE_PACKAGES,
            "trim": TRIM,
            "arch": arch,
            "recipe": 1,
        },
        sort_keys=True,
    )


def base_tarball(arch: str = "amd64") -> Path:
    digest = hashlib.sha256(base_recipe(arch).encode()).hexdigest()[:12]
    return cache_root() / f"base-{SUITE}-{digest}.tar"


def base_image(arch: str) -> str:
    return BASE_IMAGE if arch == "amd64" else f"{BASE_IMAGE}-{arch}"


def build_rootfs(tarball: Path) -> None:
    require("debootstrap")
    require_root("imagekit base")
    mirror = apt_mirror()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".base-", dir=tarball.parent))
    rootfs = work / "rootfs"
    started = time.monotonic()
    log(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)}) from {mirror}")
    try:
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "--arch=amd64",
                SUITE,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            debootstrap_log = rootfs / "debootstrap" / "debootstrap.log"
            with contextlib.suppress(OSError):
                tail += "\n" + "\n".join(debootstrap_log.read_text().splitlines()[-20:])
            raise KitError(f"debootstrap failed (exit {result.returncode}):\n{tail}")
        for pattern in TRIM:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        # Keep apt usable in derived images: it needs its cache and lists folders.
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        partial = work / "rootfs.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
            check=True,
        )
        partial.replace(tarball)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    size = tarball.stat().st_size / 1e6
    log(f"cached the base rootfs ({size:.0f} MB) as {tarball} in {time.monotonic() - started:.0f}s")


def cmd_base(lay: Layout, arch: str = "amd64") -> None:
    require("podman")
    require_root("imagekit base")
    if not (lay.state / "storage.conf").exists():
        raise KitError("the image kit is not up; run: hack/imagekit.py up")
    tarball = base_tarball(arch)
    name = base_image(arch)
    tagged = f"{name}-{tarball.stem.rsplit('-', 1)[-1]}"
    env = lay.podman_env()
    exists = subprocess.run(["podman", "image", "exists", tagged], env=env, check=False)
    if exists.returncode == 0:
        subprocess.run(["podman", "tag", tagged, name], env=env, check=True)
        log(f"{name} is present")
        return
    if not tarball.is_file():
        build_rootfs(tarball) if arch == "amd64" else build_rootfs_arm64(tarball)
    started = time.monotonic()
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
        "LABEL org.opencontainers.image.description=Debian bookworm minbase with python3",
    ]
    command = ["podman", "import", "--arch", arch, "--os", "linux"]
    for change in changes:
        command += ["--change", change]
    result = subprocess.run(
        [*command, str(tarball), tagged], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise KitError(f"podman import failed: {result.stderr.strip()}")
    subprocess.run(["podman", "tag", tagged, name], env=env, check=True)
    log(f"imported {name} in {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------------------- arm64

BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "qemu-aarch64"  # the usual name: mmdebstrap looks for it
# An ELF header of a 64-bit little-endian aarch64 executable, and which bytes must match.
AARCH64_MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
BACKPORTS = "bookworm-backports"


def qemu_binary() -> Path:
    """qemu-aarch64 from bookworm-backports (qemu 10; bookworm's 7.2 crashes importing
    onnxruntime >= 1.28), downloaded once into the cache with a private apt setup."""
    target = cache_root() / "qemu" / "qemu-aarch64-static"
    if target.is_file():
        return target
    work = Path(tempfile.mkdtemp(prefix="qemu-", dir=cache_root()))
    try:
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "archives" / "partial").mkdir(parents=True)
        sources = work / "sources.list"
        sources.write_text(f"deb {apt_mirror()} {BACKPORTS} main\n")
        options = [
            f"-o=Dir::Etc::SourceList={sources}",
            "-o=Dir::Etc::SourceParts=/dev/null",
            f"-o=Dir::State::Lists={work / 'lists'}",
            f"-o=Dir::Cache={work}",
        ]
        log(f"downloading qemu-user from {BACKPORTS}")
        for command in (
            ["apt-get", *options, "update"],
            ["apt-get", *options, "download", f"qemu-user/{BACKPORTS}"],
        ):
            result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise KitError(f"{' '.join(command[:1] + command[-2:])} failed:\n{result.stderr}")
        deb = next(work.glob("qemu-user_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "x" / "usr" / "bin" / "qemu-aarch64", target.with_suffix(".tmp"))
        target.with_suffix(".tmp").chmod(0o755)
        target.with_suffix(".tmp").rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def cmd_emulation(off: bool = False) -> None:
    require_root("imagekit emulation")
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False)
    entry = BINFMT / BINFMT_NAME
    if off:
        if entry.exists():
            entry.write_text("-1")
            log("removed the arm64 emulation")
        return
    qemu = qemu_binary()
    if entry.exists():
        current = entry.read_text()
        if "enabled" in current and f"interpreter {qemu}" in current:
            log("arm64 emulation is on")
            return
        entry.write_text("-1")  # another qemu (bookworm's 7.2 crashes on onnxruntime)
        log("replaced the host's qemu-aarch64 registration by qemu 10")
    if not (BINFMT / "register").exists():
        raise KitError("binfmt_misc is not available (mount -t binfmt_misc failed)")
    # F: the kernel opens the (static) interpreter now, so containers need no copy of it.
    line = f":{BINFMT_NAME}:M:0:{AARCH64_MAGIC}:{AARCH64_MASK}:{qemu}:FPC"
    (BINFMT / "register").write_text(line)
    log(f"arm64 programs now run under {qemu}")


def build_rootfs_arm64(tarball: Path) -> None:
    """mmdebstrap under emulation (several minutes, once): the same minbase as amd64."""
    require("mmdebstrap")
    cmd_emulation()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    trim = " ".join(f'"$1"/{p}' for p in TRIM)
    started = time.monotonic()
    log(f"mmdebstrap {SUITE} arm64 (under emulation; several minutes, once)")
    result = subprocess.run(
        ["mmdebstrap", "--arch=arm64", "--variant=minbase",
         "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
         f"--include={','.join(BASE_PACKAGES)}",
         f"--customize-hook=rm -rf {trim}; mkdir -p \"$1\"/var/lib/apt/lists/partial "
         "\"$1\"/var/cache/apt/archives/partial",
         SUITE, str(partial), apt_mirror()],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise KitError(f"mmdebstrap arm64 failed (exit {result.returncode}):\n{tail}")
    partial.rename(tarball)
    size = tarball.stat().st_size / 1e6
    log(f"cached the arm64 rootfs ({size:.0f} MB) in {time.monotonic() - started:.0f}s")


# ---------------------------------------------------------------------------- wheels


def pip_python() -> str:
    """A Python with pip: the project's venv when there is one, else this interpreter."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def wheels_dir(accelerator: str) -> Path:
    return cache_root() / "wheels" / accelerator


def operator_requirements() -> tuple[str, ...]:
    """What the operator image installs (Dockerfile, `pip install '.[optimize,signing]'`
    with --no-index): the build backend, the dependencies and the optimize and signing
    extras, from pyproject.toml."""
    try:
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
        return (
            *pyproject["build-system"]["requires"],
            *pyproject["project"]["dependencies"],
            *pyproject["project"]["optional-dependencies"]["optimize"],
            *pyproject["project"]["optional-dependencies"]["signing"],
        )
    except (OSError, KeyError, tomllib.TOMLDecodeError) as err:
        raise KitError(
            f"cannot read the operator's requirements from pyproject.toml: {err}"
        ) from err


def cmd_wheels(accelerators: list[str]) -> None:
    for accelerator in accelerators or ["operator"]:
        if accelerator != "operator":
            raise KitError(
                f"unknown wheels {accelerator!r}: only the operator's are made here; the model "
                "servers' come with their image profiles (make images)"
            )
        requirements = operator_requirements()
        target = wheels_dir(accelerator)
        stamp = target / "requirements.txt"
        wanted = "".join(f"{r}\n" for r in requirements)
        if stamp.is_file() and stamp.read_text() == wanted and any(target.glob("*.whl")):
            log(f"{accelerator} wheels are cached in {target}")
            continue
        started = time.monotonic()
        partial = target.with_name(f".{accelerator}-partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        command = [
            pip_python(),
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            # pip takes every platform it may pick; it does not expand older glibcs.
            *(f"--platform=manylinux_2_{minor}_x86_64" for minor in range(BASE_GLIBC, 16, -1)),
            "--platform=manylinux2014_x86_64",
            f"--python-version={BASE_PYTHON}",
            "--implementation=cp",
            f"--abi=cp{BASE_PYTHON.replace('.', '')}",
            f"--dest={partial}",
            *requirements,
        ]
        log(
            f"downloading the {accelerator} wheels ({', '.join(requirements)}) for "
            f"CPython {BASE_PYTHON} manylinux x86_64"
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            detail = "\n".join(result.stderr.strip().splitlines()[-6:])
            raise KitError(
                f"pip could not download the {accelerator} wheels ({', '.join(requirements)}) "
                f"for CPython {BASE_PYTHON} manylinux x86_64:\n{detail}"
            )
        (partial / "requirements.txt").write_text(wanted)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        total = sum(p.stat().st_size for p in target.glob("*.whl")) / 1e6
        names = sorted(p.name for p in target.glob("*.whl"))
        log(
            f"downloaded {len(names)} {accelerator} wheels ({total:.0f} MB) into {target} "
            f"in {time.monotonic() - started:.0f}s: {', '.join(names)}"
        )


# ---------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imagekit.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "env", "status", "down"):
        sub.add_parser(name)
    base = sub.add_parser("base")
    base.add_argument("--arch", choices=["amd64", "arm64"], default="amd64")
    emulation = sub.add_parser("emulation")
    emulation.add_argument("--off", action="store_true")
    wheels = sub.add_parser("wheels")
    wheels.add_argument("accelerators", nargs="*", metavar="operator")
    args = parser.parse_args(argv)
    try:
        lay = layout()
        if args.command == "up":
            cmd_up(lay)
        elif args.command == "base":
            cmd_base(lay, args.arch)
        elif args.command == "emulation":
            cmd_emulation(args.off)
        elif args.command == "wheels":
            cmd_wheels(list(args.accelerators))
        elif args.command == "env":
            cmd_env(lay)
        elif args.command == "status":
            return cmd_status(lay)
        elif args.command == "down":
            cmd_down(lay)
    except KitError as err:
        log(str(err))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
