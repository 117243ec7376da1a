"""The chart's signing values: the operator's settings and the Secret mounts they render to
(the signing key only where builds run, only its PEM), the opt-in Secret read, and a clear
failure when signing is asked of an operator that builds nothing."""

from __future__ import annotations

from typing import Any

import yaml
from chartkit import CHART, Helm

from edgemodel_operator.config import load_config

SIGNING = (
    "--set", "modelSigning.policy=required",
    "--set", "modelSigning.trustedKeysSecret=model-publishers",
    "--set", "imageSigning.keySecret=image-signing",
    "--set", "imageSigning.verifyKeysSecret=site-keys",
    "--set", "imageSigning.policy=warn",
    "--set", "imageSigning.namespacePolicies.line-3=enforce",
    "--set", "imageSigning.namespacePolicies.lab=off",
)  # fmt: skip


def operator(rendered: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return dict(deployment["spec"]["template"]["spec"])


def rules(rendered: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


def test_signing_values_become_settings_the_operator_accepts(helm: Helm) -> None:
    pod = operator(helm.template(*SIGNING))
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EDGEMODEL_MODEL_SIGNATURE_POLICY"] == "required"
    assert env["EDGEMODEL_MODEL_KEYS"] == "/etc/edgemodel/model-keys"
    assert env["EDGEMODEL_IMAGE_SIGNING_KEY"] == "/etc/edgemodel/image-signing/key.pem"
    assert env["EDGEMODEL_IMAGE_VERIFY_KEYS"] == "/etc/edgemodel/image-verify"
    assert env["EDGEMODEL_IMAGE_SIGNATURE_POLICY"] == "warn"
    assert env["EDGEMODEL_IMAGE_SIGNATURE_NAMESPACES"] == "lab=off,line-3=enforce"
    (password,) = [e for e in container["env"] if e["name"].endswith("_KEY_PASSWORD")]
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": "image-signing", "key": "password", "optional": True}  # fmt: skip
    config = load_config({k: v for k, v in env.items() if v is not None})
    assert config.builds is not None and config.builds.signing.image_policy == "warn"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name in ("model-keys", "image-signing-key", "image-verify-keys"):
        assert mounts[name]["readOnly"] is True
        assert volumes[name]["secret"]["defaultMode"] == 0o440
    assert volumes["image-signing-key"]["secret"]["items"] == [{"key": "key.pem",
                                                                 "path": "key.pem"}]  # fmt: skip
    assert not [r for r in rules(helm.template(*SIGNING)) if "secrets" in r["resources"]]


def test_secrets_are_read_only_when_asked(helm: Helm) -> None:
    granted = [r for r in rules(helm.template("--set", "modelSigning.secretKeyRefs=true"))
               if "secrets" in r["resources"]]  # fmt: skip
    assert granted == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    per_namespace = helm.template("--set", "modelSigning.secretKeyRefs=true",
                                  "--set", "watchNamespaces={line-3}")  # fmt: skip
    roles = [d for d in yaml.safe_load_all(per_namespace) if d and d["kind"] == "Role"]
    assert [r for role in roles for r in role["rules"] if "secrets" in r["resources"]]


def test_without_signing_values_nothing_is_mounted_or_set(helm: Helm) -> None:
    pod = operator(helm.template())
    (container,) = pod["containers"]
    names = {e["name"] for e in container["env"]}
    assert not {n for n in names if n.startswith(("EDGEMODEL_IMAGE_", "EDGEMODEL_MODEL_"))}
    assert {v["name"] for v in pod["volumes"]} == {"tmp"}


def test_signing_without_builds_fails_with_a_message(helm: Helm) -> None:
    result = helm.run("template", "x", str(CHART), "--set", "serverImage=r/s:{accelerator}",
                      "--set", "imageSigning.keySecret=image-signing", check=False)  # fmt: skip
    assert result.returncode != 0
    assert "modelSigning and imageSigning apply to images the operator builds" in result.stderr
