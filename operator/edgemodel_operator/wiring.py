"""The operator's parts, built once at start-up from the configuration and closed at exit:
the API gateway, the metrics, the image pipeline (only when builds are on: the optimize
extra is imported then and not before) and the active probe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgemodel_operator.adapters import kube, metrics_http, oip
from edgemodel_operator.adapters.events import EventRecorder
from edgemodel_operator.adapters.server_images import ServerImageResolver
from edgemodel_operator.config import Config
from edgemodel_operator.metrics import Metrics
from edgemodel_operator.reconcile.network import ProbeSource
from edgemodel_operator.reconcile.plan import PlanSettings
from edgemodel_operator.services.passes import OnePassAtATime
from edgemodel_operator.services.recent import RecentWrites
from edgemodel_operator.services.reconcile import Images, Prober, Servers


@dataclass
class Components:
    config: Config
    settings: PlanSettings
    writer: kube.KubeGateway
    metrics: Metrics
    images: Images | None
    prober: Prober | None
    servers: Servers | None = None
    events: EventRecorder | None = None  # None: kopf posts them (unit tests)
    recent: RecentWrites = field(default_factory=RecentWrites)
    passes: OnePassAtATime = field(default_factory=OnePassAtATime)
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
    )


def build(config: Config) -> Components:
    metrics = Metrics()
    closers: list[Any] = []
    images: Images | None = None
    if config.builds is not None:
        from edgemodel_operator.services.images import ImagePipeline, builder_for

        pipeline = ImagePipeline(config.builds, builder_for(config.builds), config.server_image)
        images = pipeline
        closers.append(pipeline.close)
    if config.metrics_address:
        metrics_http.serve(config.metrics_address, metrics.render)
    writer = kube.connect((config.api.connect, config.api.request))
    return Components(
        config=config,
        settings=plan_settings(config),
        writer=writer,
        events=EventRecorder(writer.api, (config.api.connect, config.api.request)),
        metrics=metrics,
        images=images,
        prober=oip.probe_many if config.active_probe else None,
        servers=ServerImageResolver(_insecure_hosts(config)),
        _closers=tuple(closers),
    )


def _insecure_hosts(config: Config) -> tuple[str, ...]:
    """The site registry's host when it speaks plain HTTP (EDGEMODEL_REGISTRY_INSECURE)."""
    builds = config.builds
    if builds is not None and builds.registry_insecure:
        return (builds.registry.split("/")[0],)
    return ()
