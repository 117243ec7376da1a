"""The operator's parts, built once at start-up from the configuration and closed at exit:
the API gateway, the metrics, the image pipeline (only when builds are on: the optimize
extra is imported then and not before), the active probe, and Prometheus's query API (or
a sampler of pods' /metrics) for the rollout analysis and telemetry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemodel_operator.adapters import kube, metrics_http, oip
from edgemodel_operator.adapters.events import EventRecorder
from edgemodel_operator.adapters.pod_metrics import PodSampler
from edgemodel_operator.adapters.prometheus import Prometheus
from edgemodel_operator.adapters.server_images import ServerImageResolver
from edgemodel_operator.config import BuildConfig, Config, ConfigError
from edgemodel_operator.metrics import Metrics
from edgemodel_operator.reconcile.network import ProbeSource
from edgemodel_operator.reconcile.plan import PlanSettings
from edgemodel_operator.services.recent import RecentWrites
from edgemodel_operator.services.reconcile import Images, Ports


@dataclass
class Components:
    config: Config
    settings: PlanSettings
    writer: kube.KubeGateway
    metrics: Metrics
    ports: Ports  # what a reconcile talks to (the writer among them)
    events: EventRecorder | None = None  # None: kopf posts them (unit tests)
    _closers: tuple[Any, ...] = ()

    def close(self) -> None:
        for closer in self._closers:
            closer()


def plan_settings(config: Config) -> PlanSettings:
    source = None
    if config.operator_namespace and config.operator_pod_labels:
        source = ProbeSource(config.operator_namespace, dict(config.operator_pod_labels))
    return PlanSettings(
        accelerators=config.accelerators,
        server_image=config.server_image,
        probe_gate=config.active_probe,
        network_policy=config.network_policy,
        probe_source=source,
        telemetry_window_seconds=config.telemetry_window_seconds,
    )


# Passes mostly wait on the API server: more threads than kopf's default (cores + 4) keep a
# thousand models moving without using more CPU; each keeps an API connection open.
PASS_THREADS = 16


def build(config: Config) -> Components:
    metrics = Metrics()
    closers: list[Any] = []
    images: Images | None = None
    writer = kube.connect((config.api.connect, config.api.request), PASS_THREADS)
    if config.builds is not None:
        from edgemodel_operator.services.images import ImagePipeline, builder_for

        pipeline = ImagePipeline(
            config.builds, builder_for(config.builds), config.server_image,
            signing=signing_for(config.builds, writer.secret_value),
        )  # fmt: skip
        images = pipeline
        closers.append(pipeline.close)
    if config.metrics_address:
        metrics_http.serve(config.metrics_address, metrics.render)
    prometheus: Prometheus | None = None
    sampler: PodSampler | None = None
    if config.prometheus_url:
        prometheus = Prometheus(config.prometheus_url)
        closers.append(prometheus.close)
    elif config.telemetry_pods:
        sampler = PodSampler(config.telemetry_pods)
        closers.append(sampler.close)
    servers = ServerImageResolver(_insecure_hosts(config))
    closers.append(servers.close)
    ports = Ports(
        writer=writer,
        images=images,
        prober=oip.probe_many if config.active_probe else None,
        servers=servers,
        queries=prometheus,
        sampler=sampler,
        recent=RecentWrites(),
        reader=writer,
    )
    events = EventRecorder(writer.api, (config.api.connect, config.api.request))
    return Components(config, plan_settings(config), writer, metrics, ports, events,
                      tuple(closers))  # fmt: skip


def _insecure_hosts(config: Config) -> tuple[str, ...]:
    """The site registry's host when it speaks plain HTTP (EDGEMODEL_REGISTRY_INSECURE)."""
    builds = config.builds
    if builds is not None and builds.registry_insecure:
        return (builds.registry.split("/")[0],)
    return ()


def check_keys(config: Config) -> None:
    """Read the configured signing keys once before start: a bad one is a ConfigError."""
    if config.builds is not None:
        signing_for(config.builds, None)


def signing_for(builds: BuildConfig, secrets: Any) -> Any:
    """The pipeline's signature parts from the configuration (services.images.Signing).
    They need the signing extra (cryptography, model-signing) only when used: without it
    and without keys, a spec that names a signature is refused, saying why."""
    from edgemodel_operator.services.images import Signing

    cfg = builds.signing
    try:
        from edgemodel_operator.adapters import model_signatures, sbom, signing
    except ImportError as err:
        if cfg.model_keys or cfg.image_key or cfg.image_verify_keys:
            raise ConfigError(f"signing keys are configured, but {err}: install "
                              "edgemodel-operator[signing]") from err  # fmt: skip
        return Signing()
    from edgemodel_operator.reconcile.signatures import SignaturePolicy
    from edgemodel_operator.services.images import registry_for

    try:
        trusted = signing.load_public_keys(Path(cfg.model_keys)) if cfg.model_keys else ()
        key = (signing.SigningKey.load(Path(cfg.image_key), cfg.image_key_password)
               if cfg.image_key else None)  # fmt: skip
        verify = (signing.load_public_keys(Path(cfg.image_verify_keys))
                  if cfg.image_verify_keys else (key.public,) if key else ())  # fmt: skip
    except signing.SigningKeyError as err:
        raise ConfigError(str(err)) from err
    registry = registry_for(builds)
    work = Path(builds.work_dir)
    required = cfg.model_policy == "required"
    signer = None
    if key is not None:
        signer = signing.ImageSigner(registry, key, sbom.SbomMaker(registry, work / "sbom"))
    # Verification runs inside a reconcile: a short timeout.
    checks = registry_for(builds, timeout=5.0)
    return Signing(
        models=model_signatures.ModelSignatures(required, trusted, secrets, work),
        signer=signer,
        verifier=signing.ImageVerifier(checks, verify) if verify else None,
        policy=SignaturePolicy(cfg.image_policy, dict(cfg.image_namespace_policies)),
    )
