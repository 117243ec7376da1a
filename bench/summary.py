"""bench/results/summary.md: one Markdown table per suite, from the <suite>.json files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tables import footprint_lines, images_lines, ota_lines, realnode_lines

ORDER = (
    "fleet", "rollback", "footprint", "ota", "optimize", "serving", "images", "realnode",
)  # fmt: skip


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _fleet(f: dict[str, Any]) -> list[str]:
    m = f["median"]
    head = [
        f"{f['nodes']:,} nodes ({f['fleet']}), {f['repeats']} run(s), medians, "
        f"operator resync {f['resync_seconds']} s; {f['rollout']}.",
        "",
    ]
    svc = "rawsvc_create_s" in m  # the second baseline, since 2026-12-02
    extra = ["raw DaemonSets + Services", "ratio"] if svc else []
    rows = [
        [
            "create until all pods Ready (s)",
            m["operator_create_s"],
            m["raw_create_s"],
            m["create_ratio"],
            *([m["rawsvc_create_s"], m["create_ratio_svc"]] if svc else []),
            "-",
        ],
        [
            "version update until all pods updated and Ready (s)",
            m["operator_update_s"],
            m["raw_update_s"],
            m["update_ratio"],
            *([m["rawsvc_update_s"], m["update_ratio_svc"]] if svc else []),
            f"{m['operator_update_success']:.0%} / {m['raw_update_success']:.0%}",
        ],
    ]
    if "operator_update_pods_s" in m:  # the rest of the operator's time: its status lagging
        done = f"{m['operator_create_pods_s']} / {m['operator_update_pods_s']}"
        rows.append(["... of which until its DaemonSets were done, create / update (s)", done,
                     "", "", *(["", ""] if svc else []), "-"])  # fmt: skip
    return head + table(
        ["step", "EdgeModel (operator)", "raw DaemonSets", "ratio", *extra, "success (op / raw)"],
        rows,
    ) + ["", "Operator update outcome(s): "
         + "; ".join(str(r.get("operator_update_outcome", "updated")) for r in f["runs"]) + ".",
         "", f"Operator peak RSS {f['operator_peak_rss_mib']} MiB, CPU {f['operator_cpu_s']} s "
         "per run (median)."]  # fmt: skip


def _rollback(f: dict[str, Any]) -> list[str]:
    fl = f["flagger"]
    rows = [
        [r["progress_deadline_s"], r["rolled_back_condition_from_apply_s"],
         r["rolled_back_condition_after_deadline_s"], r["all_pods_restored_from_apply_s"],
         r["all_pods_restored_after_deadline_s"], r["min_ready_fraction_during_bad_rollout"],
         f"{r['restore_success']:.0%}"]
        for r in f["runs"]
    ]  # fmt: skip
    return [
        f"{f['nodes']:,} nodes ({f['fleet']}), bad version: {f['bad_version']}.",
        "",
        *table(
            [
                "deadline (s)",
                "RolledBack=True from apply (s)",
                "... after deadline (s)",
                "all pods back and Ready from apply (s)",
                "... after deadline (s)",
                "min Ready fraction meanwhile",
                "pods restored",
            ],
            rows,
        ),
        "",
        f"Flagger for comparison: its code defaults are analysis interval "
        f"{fl['code_defaults']['analysis_interval_s']} s, threshold "
        f"{fl['code_defaults']['threshold']} and a progress deadline of "
        f"{fl['code_defaults']['progress_deadline_s']} s ({fl['code_defaults']['source']}); "
        f"the interval 1m x threshold 5 = {fl['documented_example']['time_to_rollback_s']} s "
        "often quoted is the value set in Flagger's examples and tutorials.",
    ]


def _optimize(f: dict[str, Any]) -> list[str]:
    from tables import optimize_lines

    return optimize_lines(f)


def _serving(f: dict[str, Any]) -> list[str]:
    from tables import serving_lines

    return serving_lines(f)


RENDER: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "fleet": _fleet,
    "rollback": _rollback,
    "footprint": footprint_lines,
    "ota": ota_lines,
    "optimize": _optimize,
    "serving": _serving,
    "images": images_lines,
    "realnode": realnode_lines,
}


def render(out: Path) -> str:
    lines = ["# Benchmark summary", ""]
    machine_line = None
    for name in ORDER:
        path = out / f"{name}.json"
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        m = doc["machine"]
        this_machine = (
            f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
            f"Linux {m['kernel']}, Python {m['python']}, onnxruntime "
            f"{m['versions'].get('onnxruntime', '?')}, kopf {m['versions'].get('kopf', '?')}."
        )
        machine_line = machine_line or this_machine
        lines += [f"## {name} ({doc['size']}, {doc['duration_s']:.0f} s)", ""]
        if this_machine != machine_line:  # suites run at another time, on another machine
            lines += [this_machine, ""]
        figures = doc["figures"]
        if doc["status"] == "error":
            lines.append(f"Failed: {figures['error']}")
        elif figures.get("skipped"):
            lines.append(str(figures["skipped"]).capitalize() + ".")
        else:
            lines += RENDER[name](figures)
        lines.append("")
    if machine_line:
        lines[1:1] = ["", machine_line]
    return "\n".join(lines).rstrip() + "\n"


def write_summary(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(render(out))
