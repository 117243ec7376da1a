"""Image profiles: what the model server of an accelerator is made of, per architecture.

A profile (images/profiles/<name>.yaml) names its accelerator, the onnxruntime execution
provider it serves with, what hardware it really runs on, the runtime class its pods need,
and per platform (amd64, arm64) the wheels to install and optionally the base image. The
image builder (edgemodel_operator.servers) turns each into one multi-arch image index."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgemodel_operator.api.accelerators import ACCELERATORS

PLATFORMS = ("amd64", "arm64")
PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Platform:
    arch: str  # amd64 | arm64
    wheels: tuple[str, ...]  # pip requirements, pinned
    base_image: str | None = None  # None: the builder's default base for this arch


@dataclass(frozen=True)
class Profile:
    name: str
    accelerator: str
    execution_provider: str
    runs_on: str
    platforms: Mapping[str, Platform]
    runtime_class: str | None = None
    needs_mirror: bool = False  # its base or wheels are not on public indexes
    source: str = ""  # the file it came from, for messages

    @property
    def archs(self) -> tuple[str, ...]:
        return tuple(a for a in PLATFORMS if a in self.platforms)


def _field(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def parse_profile(raw: Any, where: str) -> Profile:
    if not isinstance(raw, Mapping):
        raise ProfileError(f"{where}: a profile is a mapping")
    unknown = set(raw) - {"name", "accelerator", "executionProvider", "runsOn", "platforms",
                          "runtimeClassName", "needsMirror"}  # fmt: skip
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    accelerator = _field(raw, "accelerator", where)
    if accelerator not in ACCELERATORS:
        raise ProfileError(f"{where}: accelerator must be one of {', '.join(ACCELERATORS)}")
    provider = _field(raw, "executionProvider", where)
    if provider not in PROVIDERS:
        raise ProfileError(f"{where}: executionProvider must be one of {', '.join(PROVIDERS)}")
    platforms_raw = raw.get("platforms")
    if not isinstance(platforms_raw, Mapping) or not platforms_raw:
        raise ProfileError(f"{where}: platforms must map amd64 and/or arm64 to their wheels")
    platforms = {}
    for arch, entry in platforms_raw.items():
        if arch not in PLATFORMS or not isinstance(entry, Mapping):
            raise ProfileError(f"{where}: platform {arch!r} must be amd64 or arm64 with wheels")
        wheels = entry.get("wheels")
        if (
            not isinstance(wheels, list)
            or not wheels
            or not all(isinstance(w, str) for w in wheels)
        ):
            raise ProfileError(f"{where}: platforms.{arch}.wheels must list pip requirements")
        base = entry.get("baseImage")
        if base is not None and not isinstance(base, str):
            raise ProfileError(f"{where}: platforms.{arch}.baseImage must be an image reference")
        platforms[arch] = Platform(arch, tuple(wheels), base)
    runtime_class = raw.get("runtimeClassName") or None
    if runtime_class is not None and not isinstance(runtime_class, str):
        raise ProfileError(f"{where}: runtimeClassName must be a string")
    return Profile(
        name=_field(raw, "name", where),
        accelerator=accelerator,
        execution_provider=provider,
        runs_on=_field(raw, "runsOn", where),
        platforms=platforms,
        runtime_class=runtime_class,
        needs_mirror=bool(raw.get("needsMirror", False)),
        source=where,
    )


def load_profiles(directory: Path) -> dict[str, Profile]:
    """Every profile in a folder of <name>.yaml files, by name."""
    profiles: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ProfileError(f"{path.name}: {err}") from err
        profile = parse_profile(raw, path.name)
        if profile.name != path.stem:
            raise ProfileError(f"{path.name}: name {profile.name!r} must match the file name")
        profiles[profile.name] = profile
    if not profiles:
        raise ProfileError(f"no profiles (*.yaml) in {directory}")
    return profiles
