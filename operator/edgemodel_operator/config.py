"""Operator configuration, read once at start-up from EDGEMODEL_* environment variables."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgemodel_operator import __version__
from edgemodel_operator.api.accelerators import AcceleratorProfile, parse_profiles
from edgemodel_operator.reconcile.signatures import POLICIES

DEFAULT_SERVER_IMAGE = "edgemodel-server:" + __version__ + "-{accelerator}"


class ConfigError(ValueError):
    """A bad EDGEMODEL_* setting; the message names the variable and what is expected."""


@dataclass(frozen=True)
class ApiTimeouts:
    """How long any call to the API server may take (seconds): set on every request the
    operator makes itself and on kopf's, so that a hung connection never hangs it."""

    request: float = 30.0  # a whole request, answer included
    connect: float = 5.0  # TCP and TLS handshake
    watch: float = 300.0  # the API server ends a watch after this (timeoutSeconds)
    watch_inactivity: float = 70.0  # no event, not even a bookmark: the watch is dead


@dataclass(frozen=True)
class Config:
    namespaces: tuple[str, ...]  # empty: every namespace
    accelerators: Mapping[str, AcceleratorProfile]
    server_image: str  # used by targets without an image; "{accelerator}" is filled in
    resync_seconds: float  # the safety-net timer: a model reconciles at least this often
    log_level: str
    health_address: str  # host:port of the liveness endpoint
    metrics_address: str = ""  # host:port of /metrics; empty: no metrics endpoint
    builds: BuildConfig | None = None  # None: no image builds, targets run server_image
    active_probe: bool = False  # probe new pods over HTTP (needs a route to pod IPs)
    # Only EdgeModels with these labels (empty: all): shards one cluster between operators.
    selector: Mapping[str, str] = field(default_factory=dict)
    network_policy: bool = False  # one NetworkPolicy per EdgeModel admits only its clients
    operator_namespace: str = ""  # where the operator's pod runs (for the NetworkPolicy)
    operator_pod_labels: Mapping[str, str] = field(default_factory=dict)
    prometheus_url: str = ""  # the rollout analysis and telemetry ask it; "" none
    telemetry_window_seconds: int = 60  # status.telemetry: figures over this window
    telemetry_pods: int = 0  # without Prometheus: pods sampled per EdgeModel (0: none)
    # A woken model waits this long before its pass, gathering a burst of changes.
    debounce_seconds: float = 0.5
    api: ApiTimeouts = ApiTimeouts()
    # "namespace/name" of the Lease replicas elect their leader with; empty: no election.
    leader_lease: str = ""
    leader_lease_seconds: float = 15.0


@dataclass(frozen=True)
class BuildConfig:
    """How per-model images are built: the accelerator's server index plus the model,
    appended through the registry's API (builder "registry", the default: no daemon) or
    built through a Docker Engine API (builder "docker")."""

    builder: str  # registry | docker
    registry: str  # host[:port][/path] images are pushed under
    registry_insecure: bool
    auth_file: str  # a docker config.json with the registry's credentials, or ""
    work_dir: str  # model downloads, variants and unpacked images, a cache keyed by digest
    docker_host: str = ""  # the Docker Engine API (builder docker)
    context_dir: str = "images"  # holds Dockerfile.model (builder docker)
    signing: SigningConfig = field(default_factory=lambda: SigningConfig())


@dataclass(frozen=True)
class SigningConfig:
    """Model signatures checked before a build; built images signed, attested and verified
    before they are pinned. Paths name mounted Secrets; keys are read at start-up."""

    model_policy: str = "optional"  # optional (check what the spec names) | required
    model_keys: str = ""  # PEM public keys of trusted model publishers: a file or a folder
    image_key: str = ""  # PEM ECDSA P-256 private key that signs built images
    image_key_password: str = field(default="", repr=False)
    image_verify_keys: str = ""  # PEM public keys images must be signed by; else image_key's
    image_policy: str = "off"  # off | warn | enforce, operator-wide
    image_namespace_policies: Mapping[str, str] = field(default_factory=dict)


def load_config(env: Mapping[str, str]) -> Config:
    """Parse the EDGEMODEL_* variables; raise ConfigError naming the first bad one."""
    namespaces = tuple(
        n.strip() for n in env.get("EDGEMODEL_NAMESPACES", "").split(",") if n.strip()
    )
    raw_accelerators = env.get("EDGEMODEL_ACCELERATORS", "").strip()
    try:
        accelerators = parse_profiles(json.loads(raw_accelerators) if raw_accelerators else {})
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"EDGEMODEL_ACCELERATORS must be JSON like "
            f'{{"gpu": {{"nodeSelector": {{"nvidia.com/gpu.present": "true"}}}}}}: {err}'
        ) from err
    server_image = env.get("EDGEMODEL_SERVER_IMAGE", DEFAULT_SERVER_IMAGE).strip()
    if not server_image or any(c.isspace() for c in server_image):
        raise ConfigError(f"EDGEMODEL_SERVER_IMAGE is not an image reference: {server_image!r}")
    try:
        server_image.format(accelerator="cpu")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"EDGEMODEL_SERVER_IMAGE may only use the {{accelerator}} placeholder: {err}"
        ) from err
    resync = env.get("EDGEMODEL_RESYNC_SECONDS", "10")
    try:
        resync_seconds = float(resync)
    except ValueError:
        resync_seconds = -1.0
    if not 1 <= resync_seconds <= 3600:
        raise ConfigError(f"EDGEMODEL_RESYNC_SECONDS must be 1..3600 seconds, got {resync!r}")
    debounce = env.get("EDGEMODEL_DEBOUNCE_SECONDS", "0.5")
    try:
        debounce_seconds = float(debounce)
    except ValueError:
        debounce_seconds = -1.0
    if not 0 <= debounce_seconds <= 60:
        raise ConfigError(f"EDGEMODEL_DEBOUNCE_SECONDS must be 0..60 seconds, got {debounce!r}")
    log_level = env.get("EDGEMODEL_LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(
            f"EDGEMODEL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}"
        )
    health = _address(env, "EDGEMODEL_HEALTH_ADDRESS", "127.0.0.1:8081")
    metrics = _address(env, "EDGEMODEL_METRICS_ADDRESS", "")
    return Config(
        namespaces=namespaces,
        accelerators=accelerators,
        server_image=server_image,
        resync_seconds=resync_seconds,
        debounce_seconds=debounce_seconds,
        log_level=log_level,
        health_address=health,
        metrics_address=metrics,
        builds=_builds(env),
        active_probe=_flag(env, "EDGEMODEL_ACTIVE_PROBE"),
        selector=_labels(env, "EDGEMODEL_SELECTOR"),
        network_policy=_flag(env, "EDGEMODEL_NETWORK_POLICY"),
        operator_namespace=env.get("EDGEMODEL_OPERATOR_NAMESPACE", "").strip(),
        operator_pod_labels=_labels(env, "EDGEMODEL_OPERATOR_POD_LABELS"),
        prometheus_url=_url(env, "EDGEMODEL_PROMETHEUS_URL"),
        telemetry_window_seconds=_whole(env, "EDGEMODEL_TELEMETRY_WINDOW_SECONDS", 60, 10, 3600),
        telemetry_pods=_whole(env, "EDGEMODEL_TELEMETRY_PODS", 0, 0, 100),
        api=ApiTimeouts(
            request=_seconds(env, "EDGEMODEL_API_TIMEOUT_SECONDS", 30, 1, 600),
            connect=_seconds(env, "EDGEMODEL_API_CONNECT_TIMEOUT_SECONDS", 5, 0.5, 120),
            watch=_seconds(env, "EDGEMODEL_WATCH_TIMEOUT_SECONDS", 300, 10, 3600),
            watch_inactivity=_seconds(env, "EDGEMODEL_WATCH_INACTIVITY_SECONDS", 70, 2, 3600),
        ),
        leader_lease=_lease(env),
        leader_lease_seconds=_seconds(env, "EDGEMODEL_LEADER_LEASE_SECONDS", 15, 3, 300),
    )


def _url(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip().rstrip("/")
    if value and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ConfigError(f"{name} must be a URL like http://prometheus:9090, got {value!r}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, str(default)).strip()
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip() or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name} must be {low:g}..{high:g} seconds, got {raw!r}")
    return value


def _lease(env: Mapping[str, str]) -> str:
    value = env.get("EDGEMODEL_LEADER_ELECTION", "").strip()
    namespace, sep, name = value.partition("/")
    if value and (not sep or not namespace or not name or "/" in name):
        raise ConfigError(
            f"EDGEMODEL_LEADER_ELECTION must be <namespace>/<lease name>, got {value!r}"
        )
    return value


def _labels(env: Mapping[str, str], name: str) -> dict[str, str]:
    """ "key=value,key=value" as a map; a clear error on anything else."""
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in env.get(name, "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name} must be key=value pairs separated by commas, got {part!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    host, _, port = value.rpartition(":")
    if value and (not host or not port.isdigit() or not 0 < int(port) < 65536):
        raise ConfigError(f"{name} must be host:port, got {value!r}")
    return value


def _builds(env: Mapping[str, str]) -> BuildConfig | None:
    registry = env.get("EDGEMODEL_REGISTRY_URL", "").strip().rstrip("/")
    builder = env.get("EDGEMODEL_BUILDER", "registry" if registry else "off").strip().lower()
    if builder not in ("registry", "docker", "off"):
        raise ConfigError(f"EDGEMODEL_BUILDER must be registry, docker or off, got {builder!r}")
    if builder == "off":
        given = [name for name in SIGNING_VARIABLES if env.get(name, "").strip()]
        if given:
            raise ConfigError(
                f"{', '.join(given)} apply to images the operator builds, and builds are off "
                "(set EDGEMODEL_REGISTRY_URL, or unset them)"
            )
        return None
    if not registry:
        raise ConfigError(
            f"EDGEMODEL_BUILDER={builder} needs EDGEMODEL_REGISTRY_URL (where images are pushed)"
        )
    if "://" in registry:
        raise ConfigError(f"EDGEMODEL_REGISTRY_URL is host[:port][/path], got {registry!r}")
    docker_host = env.get("DOCKER_HOST", "").strip()
    if builder == "docker" and not docker_host:
        raise ConfigError("EDGEMODEL_BUILDER=docker needs DOCKER_HOST (the Docker Engine API)")
    insecure = env.get("EDGEMODEL_REGISTRY_INSECURE", "false").strip().lower()
    if insecure not in ("true", "false"):
        raise ConfigError(f"EDGEMODEL_REGISTRY_INSECURE must be true or false, got {insecure!r}")
    cache = env.get("XDG_CACHE_HOME") or f"{env.get('HOME', '/tmp')}/.cache"
    return BuildConfig(
        builder=builder,
        registry=registry,
        registry_insecure=insecure == "true",
        auth_file=env.get("EDGEMODEL_REGISTRY_AUTH_FILE", ""),
        work_dir=env.get("EDGEMODEL_WORK_DIR", f"{cache}/edgemodel-operator/work"),
        docker_host=docker_host,
        context_dir=env.get("EDGEMODEL_BUILD_CONTEXT", "images"),
        signing=_signing(env),
    )


SIGNING_VARIABLES = (
    "EDGEMODEL_MODEL_SIGNATURE_POLICY", "EDGEMODEL_MODEL_KEYS", "EDGEMODEL_IMAGE_SIGNING_KEY",
    "EDGEMODEL_IMAGE_VERIFY_KEYS", "EDGEMODEL_IMAGE_SIGNATURE_POLICY",
    "EDGEMODEL_IMAGE_SIGNATURE_NAMESPACES",
)  # fmt: skip


def _signing(env: Mapping[str, str]) -> SigningConfig:
    model_policy = env.get("EDGEMODEL_MODEL_SIGNATURE_POLICY", "optional").strip()
    if model_policy not in ("optional", "required"):
        raise ConfigError(
            f"EDGEMODEL_MODEL_SIGNATURE_POLICY must be optional or required, got {model_policy!r}"
        )
    model_keys = env.get("EDGEMODEL_MODEL_KEYS", "").strip()
    if model_policy == "required" and not model_keys:
        raise ConfigError(
            "EDGEMODEL_MODEL_SIGNATURE_POLICY=required needs EDGEMODEL_MODEL_KEYS (the public "
            "keys of the model publishers the operator trusts)"
        )
    image_key = env.get("EDGEMODEL_IMAGE_SIGNING_KEY", "").strip()
    verify_keys = env.get("EDGEMODEL_IMAGE_VERIFY_KEYS", "").strip()
    has_keys = bool(image_key or verify_keys)
    policy = env.get("EDGEMODEL_IMAGE_SIGNATURE_POLICY", "enforce" if has_keys else "off").strip()
    namespaces = _labels(env, "EDGEMODEL_IMAGE_SIGNATURE_NAMESPACES")
    for name, value in (("EDGEMODEL_IMAGE_SIGNATURE_POLICY", policy),
                        *((f"EDGEMODEL_IMAGE_SIGNATURE_NAMESPACES ({ns})", v)
                          for ns, v in namespaces.items())):  # fmt: skip
        if value not in POLICIES:
            raise ConfigError(f"{name} must be off, warn or enforce, got {value!r}")
    if not has_keys and any(p != "off" for p in (policy, *namespaces.values())):
        raise ConfigError(
            "verifying image signatures (EDGEMODEL_IMAGE_SIGNATURE_POLICY warn or enforce) "
            "needs EDGEMODEL_IMAGE_VERIFY_KEYS or EDGEMODEL_IMAGE_SIGNING_KEY"
        )
    return SigningConfig(
        model_policy=model_policy,
        model_keys=model_keys,
        image_key=image_key,
        image_key_password=env.get("EDGEMODEL_IMAGE_SIGNING_KEY_PASSWORD", ""),
        image_verify_keys=verify_keys,
        image_policy=policy,
        image_namespace_policies=namespaces,
    )


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value == "true"
