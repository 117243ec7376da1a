"""The operator starts without the optimize extra (numpy, onnx, onnxruntime): only a site
whose operator builds images needs it."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("numpy", "onnx", "onnxruntime", "onnxconverter_common")


def test_the_operator_imports_without_the_optimize_extra() -> None:
    script = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"  # import fails for these
        "import edgemodel_operator.__main__, edgemodel_operator.wiring\n"
        "from edgemodel_operator.config import load_config\n"
        "from edgemodel_operator.wiring import plan_settings\n"
        "plan_settings(load_config({}))\n"
        "assert not any(m and m.startswith('edgemodel_operator.optimize') for m in sys.modules)\n"
        "try:\n"
        "    import edgemodel_operator.services.images\n"
        "except ImportError:\n"
        "    print('builds need the extra')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "builds need the extra"
