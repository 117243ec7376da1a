"""Suite `update-bytes`: what a model update costs to pull, from the local registry's
manifests: the last layer (the model) against the whole image."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from common import ROOT

ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
SKIP = "skipped: needs the image toolkit (hack/imagekit.py) with its registry running"


def _get(url: str, accept: str | None = None) -> Any:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def registry_address() -> str:
    if os.environ.get("EDGEMODEL_REGISTRY"):
        return os.environ["EDGEMODEL_REGISTRY"]
    return f"127.0.0.1:{os.environ.get('IMAGEKIT_REGISTRY_PORT', '16500')}"


def _manifest(base: str, repo: str, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = _get(f"{base}/{repo}/manifests/{ref}", ACCEPT)
    if "manifests" in doc:  # an index: take linux/amd64, else the first
        entries = doc["manifests"]
        pick = next(
            (m for m in entries if (m.get("platform") or {}).get("architecture") == "amd64"),
            entries[0],
        )
        doc = _get(f"{base}/{repo}/manifests/{pick['digest']}", ACCEPT)
    return doc


def suite_update_bytes(size: str, work: Path) -> dict[str, Any]:
    if not (ROOT / "hack" / "imagekit.py").is_file():
        return {"skipped": SKIP + " (hack/imagekit.py is missing)"}
    base = f"http://{registry_address()}/v2"
    try:
        _get(base + "/")
        repos = _get(base + "/_catalog").get("repositories") or []
    except (urllib.error.URLError, OSError, ValueError) as err:
        return {"skipped": f"{SKIP} (no registry answered at {registry_address()}: {err})"}
    images = []
    for repo in repos:
        for tag in _get(f"{base}/{repo}/tags/list").get("tags") or []:
            doc = _manifest(base, repo, tag)
            layers = [int(layer["size"]) for layer in doc.get("layers", [])]
            if not layers:
                continue
            total = sum(layers) + int(doc.get("config", {}).get("size", 0))
            images.append(
                {
                    "image": f"{repo}:{tag}",
                    "layers": len(layers),
                    "last_layer_bytes": layers[-1],
                    "image_bytes": total,
                    "last_layer_share": round(layers[-1] / total, 4),
                }
            )
    if not images:
        return {"skipped": f"{SKIP} (the registry at {registry_address()} holds no images)"}
    return {
        "registry": registry_address(),
        "note": "compressed sizes from the manifests: what a node pulls when only the model "
        "layer changed versus a cold pull of the whole image",
        "images": images,
    }
