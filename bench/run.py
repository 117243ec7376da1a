"""EdgeModel benchmarks: `python bench/run.py --suite NAME|all --size tiny|full --out DIR`.

Each suite writes DIR/<suite>.json (its figures and a description of the machine); the
run rewrites DIR/summary.md from every <suite>.json found in DIR. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, log, machine

SUITES = (
    "fleet", "rollback", "footprint", "ota", "optimize", "serving", "images", "realnode",
)  # fmt: skip


def _runner(name: str) -> Callable[[str, Path], dict[str, Any]]:
    if name == "optimize":
        from model_suite import suite_optimize

        return suite_optimize
    if name == "serving":
        from serving_suite import suite_serving

        return suite_serving
    if name == "images":
        from images_suite import suite_images

        return suite_images
    if name == "realnode":
        from realnode_suite import suite_realnode

        return suite_realnode
    if name == "footprint":
        from footprint_suite import suite_footprint

        return suite_footprint
    if name == "ota":
        from ota_suite import suite_ota

        return suite_ota
    from cluster_suites import suite_fleet, suite_rollback

    return {"fleet": suite_fleet, "rollback": suite_rollback}[name]


def run_suite(name: str, size: str, out: Path) -> dict[str, Any]:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=f"edgemodel-bench-{name}-"))
    started = time.time()
    t0 = time.monotonic()
    log(f"suite {name} ({size}) starting")
    try:
        figures = _runner(name)(size, work)
        status = "skipped" if figures.get("skipped") else "ok"
    except Exception as err:  # one failing suite must not lose the others' results
        traceback.print_exc()
        figures = {"error": f"{type(err).__name__}: {err}"}
        status = "error"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "suite": name,
        "size": size,
        "status": status,
        "started_unix": round(started),
        "duration_s": round(time.monotonic() - t0, 1),
        "machine": machine(),
        "figures": figures,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    log(f"suite {name} ({size}) {status} in {result['duration_s']}s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="all", choices=[*SUITES, "all"])
    parser.add_argument("--size", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    # Stopped with SIGTERM, unwind: the suites' cleanups stop their operator and cluster.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    out = Path(args.out)
    names = SUITES if args.suite == "all" else (args.suite,)
    results = [run_suite(n, args.size, out) for n in names]
    from summary import write_summary

    write_summary(out)
    return 1 if any(r["status"] == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
