"""EDGEMODEL_* configuration: defaults, overrides and a clear error for each bad value."""

from __future__ import annotations

import json

import pytest

from edgemodel_operator.config import DEFAULT_SERVER_IMAGE, ConfigError, load_config


def test_defaults() -> None:
    config = load_config({})
    assert config.namespaces == ()
    assert config.server_image == DEFAULT_SERVER_IMAGE
    assert config.resync_seconds == 10
    assert config.health_address == "127.0.0.1:8081"
    assert config.accelerators["gpu"].resource == "nvidia.com/gpu"
    assert dict(config.accelerators["npu"].node_selector) == {"edgeai.dev/accelerator": "npu"}


def test_overrides() -> None:
    config = load_config(
        {
            "EDGEMODEL_NAMESPACES": "line-1, line-2",
            "EDGEMODEL_ACCELERATORS": json.dumps(
                {"gpu": {"nodeSelector": {"nvidia.com/gpu.present": "true"}}}
            ),
            "EDGEMODEL_SERVER_IMAGE": "registry.local/server:1-{accelerator}",
            "EDGEMODEL_RESYNC_SECONDS": "2.5",
            "EDGEMODEL_LOG_LEVEL": "debug",
        }
    )
    assert config.namespaces == ("line-1", "line-2")
    assert dict(config.accelerators["gpu"].node_selector) == {"nvidia.com/gpu.present": "true"}
    assert config.accelerators["cpu"] == load_config({}).accelerators["cpu"]
    assert config.resync_seconds == 2.5
    assert config.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"EDGEMODEL_ACCELERATORS": "{not json"}, "EDGEMODEL_ACCELERATORS"),
        ({"EDGEMODEL_ACCELERATORS": '{"gpu": 3}'}, "EDGEMODEL_ACCELERATORS"),
        ({"EDGEMODEL_SERVER_IMAGE": "bad image"}, "EDGEMODEL_SERVER_IMAGE"),
        ({"EDGEMODEL_SERVER_IMAGE": "img:{version}"}, "EDGEMODEL_SERVER_IMAGE"),
        ({"EDGEMODEL_RESYNC_SECONDS": "soon"}, "EDGEMODEL_RESYNC_SECONDS"),
        ({"EDGEMODEL_RESYNC_SECONDS": "0"}, "EDGEMODEL_RESYNC_SECONDS"),
        ({"EDGEMODEL_LOG_LEVEL": "chatty"}, "EDGEMODEL_LOG_LEVEL"),
        ({"EDGEMODEL_ACTIVE_PROBE": "sometimes"}, "EDGEMODEL_ACTIVE_PROBE"),
        ({"EDGEMODEL_BUILDER": "docker"}, "EDGEMODEL_REGISTRY_URL"),
        ({"EDGEMODEL_BUILDER": "kaniko", "EDGEMODEL_REGISTRY_URL": "r:5"}, "EDGEMODEL_BUILDER"),
        ({"EDGEMODEL_BUILDER": "docker", "EDGEMODEL_REGISTRY_URL": "r:5"}, "DOCKER_HOST"),
        ({"EDGEMODEL_SELECTOR": "shard"}, "EDGEMODEL_SELECTOR"),
        ({"EDGEMODEL_HEALTH_ADDRESS": "8081"}, "EDGEMODEL_HEALTH_ADDRESS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config(env)


def test_builds_are_daemonless_by_default_once_a_registry_is_named() -> None:
    assert load_config({}).builds is None
    builds = load_config({"EDGEMODEL_REGISTRY_URL": "registry.local:5000/edge"}).builds
    assert builds is not None and (builds.builder, builds.docker_host) == ("registry", "")
    assert load_config({"EDGEMODEL_REGISTRY_URL": "r:5", "EDGEMODEL_BUILDER": "off"}).builds is None
    docker = load_config({"EDGEMODEL_REGISTRY_URL": "r:5", "EDGEMODEL_BUILDER": "docker",
                          "DOCKER_HOST": "unix:///run/podman.sock"}).builds  # fmt: skip
    assert docker is not None and docker.builder == "docker"
