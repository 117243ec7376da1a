"""Signatures through a real building operator on the local cluster: EdgeModels whose model
is signed by its publisher (the public key in a Secret of their namespace, read through the
API server), built by the operator and signed with its key (an encrypted PEM file, as a
mounted Secret gives it), then verified with the key the site configured before anything
is pinned. The site trusts another image key here: in the namespace whose policy is
enforce nothing is rolled out (ImageSignatureInvalid), in the one whose policy is warn the
image is pinned with a Warning. A model signed by a key nobody trusts builds nothing. The
real cosign verifies what the operator pushed."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import digits
import pytest
from imagekit_support import Kit
from signing_support import Cosign, KeyPair, cosign_binary, key_pair, sign_model
from test_operator_builds import cond, free_port, wait_status

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from clusterkit import SIMULATED_ONLY, Cluster, OperatorProcess  # noqa: E402

CPU = [{"name": "cpu", "accelerator": "cpu", "precision": "int8", "replicas": 1}]


@dataclass(frozen=True)
class Site:
    enforce: str  # namespace with the operator-wide policy, enforce
    warn: str  # namespace whose policy is warn
    store: str  # http://... of the model store
    keys: dict[str, KeyPair]
    registry: str


@pytest.fixture(scope="module")
def site(
    cluster: Cluster, imagekit: Kit, digits_model: digits.DigitsModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:  # fmt: skip
    """Two namespaces with the publisher's key in a Secret; a model store serving the model,
    its samples, its publisher's signature and one made with a key nobody trusts."""
    folder = tmp_path_factory.mktemp("signing-site")
    keys = {name: key_pair(folder / "keys", name, "pw" if name == "images" else "")
            for name in ("publisher", "images", "site", "stranger")}  # fmt: skip
    store = folder / "store"
    store.mkdir()
    shutil.copyfile(digits_model.model, store / "model.onnx")
    shutil.copyfile(digits_model.samples, store / "samples.npz")
    sign_model(keys["publisher"], store / "model.onnx", store / "model.onnx.sig")
    sign_model(keys["stranger"], store / "model.onnx", store / "stranger.sig")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(store))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    suffix = uuid.uuid4().hex[:6]
    namespaces = (f"sign-enforce-{suffix}", f"sign-warn-{suffix}")
    for ns in namespaces:
        labels = {"pod-security.kubernetes.io/enforce": "restricted"}
        cluster.core.create_namespace({"metadata": {"name": ns, "labels": labels}})
        cluster.kubectl("create", "secret", "generic", "publisher", "-n", ns,
                        f"--from-file=model.pub={keys['publisher'].public}")  # fmt: skip
    yield Site(*namespaces, f"http://127.0.0.1:{server.server_address[1]}", keys,
               f"{imagekit.registry}/edgemodels-test-{imagekit.run_id}")  # fmt: skip
    server.shutdown()


@pytest.fixture(scope="module")
def signing_operator(
    cluster: Cluster, site: Site, server_images: str, pool: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:  # fmt: skip
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(ROOT / "crds" / "edgemodels.edgeai.dev.yaml"))  # fmt: skip
    tmp = tmp_path_factory.mktemp("signing-operator")
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "EDGEMODEL_HEALTH_ADDRESS": f"127.0.0.1:{port}",
        "EDGEMODEL_RESYNC_SECONDS": "2",
        "EDGEMODEL_NAMESPACES": f"{site.enforce},{site.warn}",
        "EDGEMODEL_BUILDER": "registry",
        "EDGEMODEL_REGISTRY_URL": site.registry,
        "EDGEMODEL_REGISTRY_INSECURE": "true",
        "EDGEMODEL_SERVER_IMAGE": server_images,
        "EDGEMODEL_WORK_DIR": str(tmp / "work"),
        "EDGEMODEL_ACCELERATORS": SIMULATED_ONLY,
        # The operator signs with its key; the site trusts another one.
        "EDGEMODEL_IMAGE_SIGNING_KEY": str(site.keys["images"].private),
        "EDGEMODEL_IMAGE_SIGNING_KEY_PASSWORD": site.keys["images"].password,
        "EDGEMODEL_IMAGE_VERIFY_KEYS": str(site.keys["site"].public),
        "EDGEMODEL_IMAGE_SIGNATURE_POLICY": "enforce",
        "EDGEMODEL_IMAGE_SIGNATURE_NAMESPACES": f"{site.warn}=warn",
    }
    proc = OperatorProcess([sys.executable, "-m", "edgemodel_operator"], env,
                           tmp / "operator.log", f"http://127.0.0.1:{port}/healthz")  # fmt: skip
    proc.start()
    yield proc
    for ns in (site.enforce, site.warn):
        cluster.delete_namespace(ns)  # while the operator runs (its builds stop)
    proc.stop()


def edgemodel(name: str, site: Site, sha: str, signature: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgeai.dev/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": f"{site.store}/model.onnx", "sha256": sha, "version": "1.0.0",
                "validation": {"samplesUri": f"{site.store}/samples.npz", "maxAccuracyDrop": 0.05},
                "signature": {"uri": f"{site.store}/{signature}",
                              "keySecretRef": {"name": "publisher", "key": "model.pub"}},
            },
            "targets": CPU,
        },
    }  # fmt: skip


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def crd_note(cluster: Cluster) -> str:
    """Why a field may be missing: the cluster is shared, and another checkout may have
    applied an EdgeModel CRD without the signature fields, which the API server prunes."""
    crd = json.loads(cluster.kubectl("get", "crd", "edgemodels.edgeai.dev", "-o", "json"))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    has = "signature" in schema["spec"]["properties"]["model"]["properties"]
    return f"the cluster's EdgeModel CRD {'has' if has else 'lacks'} spec.model.signature"


def deployments(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {d.metadata.name: d.spec.template.spec.containers[0].image
            for d in cluster.apps.list_namespaced_deployment(namespace).items}  # fmt: skip


def test_the_site_policy_decides_what_is_pinned(
    cluster: Cluster, signing_operator: OperatorProcess, site: Site,
    digits_model: digits.DigitsModel,
) -> None:  # fmt: skip
    sha = hashlib.sha256(digits_model.model.read_bytes()).hexdigest()
    for ns in (site.enforce, site.warn):
        apply(cluster, ns, edgemodel("digits", site, sha, "model.onnx.sig"))
    # enforce: built (the model's signature held), signed by the operator, but the site
    # trusts another key: not pinned, nothing rolled out.
    held = wait_status(
        cluster, site.enforce, "digits",
        lambda s: cond(s, "ImagesReady").get("reason") == "ImageSignatureInvalid", 600,
        "ImageSignatureInvalid in the enforce namespace",
    )  # fmt: skip
    message = cond(held, "Degraded")["message"]
    assert "was not pinned: its signature did not verify (policy enforce)" in message
    assert "none by a trusted key (site.pub" in message
    assert held["phase"] == "Failed"
    assert deployments(cluster, site.enforce) == {}
    # warn: the same kind of image is pinned, with the warning in status and an Event.
    try:
        pinned = wait_status(
            cluster, site.warn, "digits",
            lambda s: cond(s, "ImagesReady").get("status") == "True"
            and "signature" in s["images"][0], 600, "pinned under warn, with its signature",
        )  # fmt: skip
    except AssertionError as err:
        raise AssertionError(f"{err} ({crd_note(cluster)})") from err
    (image,) = pinned["images"]
    assert image["signature"].startswith("not verified (policy warn): ")
    assert deployments(cluster, site.warn) == {"digits-cpu": image["image"]}
    events = cluster.kubectl("get", "events", "-n", site.warn, "-o", "json",
                             "--field-selector", "reason=ImageSignatureInvalid")  # fmt: skip
    assert any(image["image"] in e["message"] for e in json.loads(events)["items"])

    # What the operator pushed verifies with the real cosign and its own key.
    cosign = Cosign(cosign_binary())
    ok = cosign.verify(site.keys["images"].public, image["image"])
    assert ok.returncode == 0, ok.stderr
    assert cosign.verify_sbom(site.keys["images"].public, image["image"]).returncode == 0


def test_a_model_signed_by_a_stranger_builds_nothing(
    cluster: Cluster, signing_operator: OperatorProcess, site: Site,
    digits_model: digits.DigitsModel,
) -> None:  # fmt: skip
    sha = hashlib.sha256(digits_model.model.read_bytes()).hexdigest()
    apply(cluster, site.enforce, edgemodel("stranger", site, sha, "stranger.sig"))
    refused = wait_status(
        cluster, site.enforce, "stranger",
        lambda s: cond(s, "ImagesReady").get("reason") == "ModelSignatureInvalid", 120,
        "ModelSignatureInvalid",
    )  # fmt: skip
    message = cond(refused, "ImagesReady")["message"]
    assert "signed by another key" in message
    assert f"Secret {site.enforce}/publisher (key model.pub)" in message
    assert refused["phase"] == "Failed"
    assert "stranger-cpu" not in deployments(cluster, site.enforce)
