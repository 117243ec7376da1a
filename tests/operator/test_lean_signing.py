"""The operator starts, and builds, without the signing extra (cryptography, model-signing):
only a site that signs or verifies needs it. A spec naming a signature is then refused, and
configured keys stop the start with a message saying what to install."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("cryptography", "model_signing", "OpenSSL")


def test_the_operator_starts_and_builds_without_the_signing_extra() -> None:
    script = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"  # import fails for these
        "import edgemodel_operator.__main__, edgemodel_operator.services.images\n"
        "from edgemodel_operator import wiring\n"
        "from edgemodel_operator.config import ConfigError, load_config\n"
        "builds = {'EDGEMODEL_REGISTRY_URL': 'reg.local:5000'}\n"
        "config = load_config(builds)\n"
        "wiring.check_keys(config)\n"
        "assert wiring.signing_for(config.builds, None).models is None\n"
        "config = load_config({**builds, 'EDGEMODEL_IMAGE_SIGNING_KEY': '/keys/cosign.key'})\n"
        "try:\n"
        "    wiring.check_keys(config)\n"
        "except ConfigError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("signing keys are configured, but ")
    assert "install edgemodel-operator[signing]" in result.stdout
