"""Markdown tables of the model suites, shared by summary.md and the README's generated
blocks (bench/readme.py), so both always show the same figures from the same json."""

from __future__ import annotations

from typing import Any

# Why a goal is missed, per model and goal, from what the runs and the model files show.
# Shown only next to a goal the json says was missed.
WHY: dict[tuple[str, str], str] = {
    ("digits", "smaller"): "a 20 kB file: graph and scales weigh as much as the 5k weights",
    ("digits", "smaller4"): "a 20 kB file: graph and scales weigh as much as the 5k weights",
    ("digits", "faster"): "a 64x64 + 64x10 MLP takes microseconds; the call overhead dominates",
    ("ocr-det", "smaller"): (
        "the weights are 4x smaller; per-channel scales, int32 biases and the QDQ nodes "
        "(about 0.27 MB) are not"
    ),
    ("ocr-det", "faster"): (
        "only Conv/MatMul/Gemm run in int8; the hard-swish, add and multiply between them "
        "stay float on 256x512 feature maps, each boundary a quantize and a dequantize step"
    ),
    ("ocr-cls", "smaller"): (
        "0.6 MB model of small depthwise layers: its int8 weights are 0.13 MB, the rest is "
        "graph, scales and biases"
    ),
    ("ocr-cls", "faster"): "1 ms model: quantize/dequantize steps cost what int8 saves",
    ("ocr-rec", "faster"): (
        "only Conv/MatMul/Gemm run in int8; LayerNorm, attention softmax and hard-swish "
        "stay float between them"
    ),
    ("silero-vad", "faster"): (
        "a 32 ms frame takes ~0.15 ms; the LSTM in its If branch still computes in float "
        "(its weights are stored as int8 and dequantized)"
    ),
}


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _goal_cell(model: str, name: str, row: dict[str, Any]) -> str:
    goals = row.get("goals") or {}
    if not goals:
        return ""
    checks = goals["checks"]
    if goals["reached"]:
        return "reached" + (" (faster: no int8 dot product)" if checks.get("faster") is None
                            and name == "int8" else "")  # fmt: skip
    parts = []
    for key in goals["missed"]:
        what = {
            "smaller": f"{row['smaller_x']}x smaller" if name == "int8"
            else f"{row['smaller_pct']}% smaller",
            "faster": f"{row['faster_x']}x faster",
            "drop": f"drop {row['metric_drop']}",
        }[key]  # fmt: skip
        why = WHY.get((model, key + ("4" if name == "int4" and key == "smaller" else "")))
        if key == "drop" and name == "int4":
            why = "4-bit weights without retraining"
        parts.append(f"{what}" + (f": {why}" if why else ""))
    return "missed: " + "; ".join(parts)


def optimize_rows(f: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for model, m in f["models"].items():
        arrow = "" if m["higher_is_better"] else " (lower is better)"
        for name, row in m["variants"].items():
            if "error" in row:
                rows.append([model, name, "could not be made: " + row["error"][:160],
                             "", "", "", "", "", ""])  # fmt: skip
                continue
            gate = row.get("gate")
            gate_cell = "" if gate is None else (
                f"{'pass' if gate['passed'] else 'fail'} ({gate['metric'].replace('_', ' ')} "
                f"{gate['value']:.4g})"
            )  # fmt: skip
            ov = row.get("openvino") or {}
            ov_cell = (f"{ov['ms_p50']:.3g} ({ov.get('faster_x', '-')}x)" if "ms_p50" in ov
                       else "fails: " + ov["error"][:110] if "error" in ov else "")  # fmt: skip
            rows.append([
                model,
                f"{name} ({row['method']})",
                f"{row['bytes']:,} ({row['smaller_x']}x)",
                f"{row['ms_p50']:.3g} / {row['ms_p99']:.3g} ({row['faster_x']}x)",
                ov_cell,
                f"{m['metric']}{arrow} {row['metric']:.4g}",
                f"{row['metric_drop']:+.4f}" if name != "fp32" else "",
                gate_cell,
                _goal_cell(model, name, row),
            ])  # fmt: skip
    return rows


def optimize_lines(f: dict[str, Any]) -> list[str]:
    cpu = f["cpu_int8"]
    goals = f["goals"]
    head = [
        f"onnxruntime {f['provider']}; latency {f['latency']}. "
        + (f"OpenVINO: {f['openvino']}. " if f.get("openvino") else "")
        + "CPU int8 support: "
        f"{', '.join(cpu['flags']) or 'none found'} (int8 dot product: "
        f"{'yes' if cpu['int8_dot_product'] else 'no'}). Goals: int8 >= "
        f"{goals['int8']['smaller_x']}x smaller, >= {goals['int8']['faster_x']}x faster "
        f"(with int8 dot product), drop <= {goals['int8']['max_drop']}; int4 >= "
        f"{goals['int4']['smaller_pct']}% smaller, drop <= {goals['int4']['max_drop']}. "
        "The drop is the task metric's loss vs fp32 (negative: the variant scored better); "
        "the gate ran with its default thresholds on rows never used for calibration.",
        "",
    ]
    body = table(
        ["model", "variant", "bytes (x smaller)", "CPU EP p50 / p99 ms (x faster)",
         "OpenVINO p50 ms (x faster)", "task metric", "drop", "gate", "goal"],
        optimize_rows(f),
    )  # fmt: skip
    data = [
        f"- **{model}**: {m['source']}, license {m['license']}; {m['data']}; "
        f"{m['calibration_rows']} calibration rows, {m['gate_rows']} gate rows."
        for model, m in f["models"].items()
    ]
    return head + body + ["", *data]


def serving_lines(f: dict[str, Any]) -> list[str]:
    results = f["results"]
    names = list(results)
    rows = []
    for case in next(iter(results.values())):
        kind, conc = case.split("_c")
        for name in names:
            r = results[name][case]
            cmp = f.get("comparison", {}).get(case) if name == "edgemodel" else None
            verdict = ""
            if cmp:
                mine, theirs = cmp["p99_ms_ours_vs_kserve"]
                verdict = (f"{cmp['throughput_x_vs_best_kserve']}x the best KServe; p99 "
                           f"{'lower' if mine < theirs else 'higher'} "
                           f"({'goal reached' if cmp['reached'] else 'goal missed'})")  # fmt: skip
            rows.append([conc, kind, name, r["requests_per_s"], r["ms_p50"], r["ms_p99"], verdict])
    direct = f["direct_onnxruntime"]
    collapse = ", ".join(
        f"{kind}: {'none' if ok else 'throughput falls'}" for kind, ok in f["no_collapse"].items()
    )
    sizes = f.get("installed_bytes", {})
    lines = [
        f"{f['model']}; {f['cores']} usable cores. Ours: {f['servers']['edgemodel']}. KServe: "
        f"{f['servers']['kserve']}. Load: {f['load']}.",
        "",
        *table(
            [
                "concurrency",
                "tensors",
                "server",
                "requests/s",
                "p50 (ms)",
                "p99 (ms)",
                "ours vs KServe (goal: >= 3x, lower p99)",
            ],
            rows,
        ),
        "",
        f"onnxruntime called in-process: p50 {direct['ms_p50']} ms, p99 {direct['ms_p99']} ms "
        f"per inference. Ours from concurrency 1 to 8 (collapse?): {collapse}.",
    ]
    if sizes:
        lines += [
            "",
            f"Installed size: ours {sizes['edgemodel'] / 1e6:.0f} MB, KServe "
            + (f"{sizes['kserve'] / 1e6:.0f} MB" if sizes.get("kserve") else "not installed")
            + f" ({sizes['note']})",
        ]
    return lines


def images_lines(f: dict[str, Any]) -> list[str]:
    """Daemonless (registry API) vs Docker Engine builds of the same model, side by side."""
    rows = []
    for m in f["models"]:
        d, k = m["daemonless"], m["docker"]
        rows.append([
            f"{m['model']}", f"{d['median_build_push_s']:.3g}", f"{k['median_build_push_s']:.3g}",
            f"{m['ratio_docker_over_daemonless']}x", f"{d['median_smoke_s']:.3g}",
            f"{k['median_smoke_s']:.3g}", f"{d['median_stored_bytes'] / 2**20:.1f}",
            f"{k['median_stored_bytes'] / 2**20:.1f}",
        ])  # fmt: skip
    model = next((m for m in f["models"] if "10" in m["model"]), None)
    reached = model is not None and model["daemonless"]["median_build_push_s"] <= 2.0
    sizes = ", ".join(
        f"{s['accelerator']}/{s['arch']} {s['compressed_bytes'] / 2**20:,.0f} MiB"
        for s in f["server_image_sizes"]
    )
    return [
        f"Goal: {f['goal']}: **{'reached' if reached else 'not reached'}**. Medians of "
        f"{f['repeats']} run(s) each, the two builders alternating. {f['note']}.",
        "",
        *table(
            ["model", "daemonless build+push (s)", "docker build+push (s)",
             "docker / daemonless", "daemonless smoke (s)", "docker smoke (s)",
             "registry growth daemonless (MiB)", "docker (MiB)"],
            rows,
        ),
        "",
        f"Published server images, compressed: {sizes or 'none found'}.",
    ]  # fmt: skip


def realnode_lines(f: dict[str, Any]) -> list[str]:
    """Apply to first inference on a real kubelet + containerd node."""
    rows = []
    for mode, m in f["modes"].items():
        rows.append([
            mode, f"{m['median_cold_s']:.3g}", f"{m['median_cold_pulled_bytes'] / 2**20:,.1f}",
            f"{m['median_warm_s']:.3g}", f"{m['median_update_s']:.3g}",
            f"{m['median_update_pulled_bytes'] / 2**20:,.2f}",
        ])  # fmt: skip
    return [
        f"Node {f['node']}, model {f['model_bytes']:,} bytes, medians of {f['repeats']} "
        f"run(s). {f['note']}.",
        "",
        *table(
            ["model delivery", "cold: apply to first answer (s)", "pulled (MiB)",
             "warm: images cached (s)", "version update to first v2 answer (s)",
             "update pulled (MiB)"],
            rows,
        ),
    ]  # fmt: skip


def headline_lines(figures: dict[str, dict[str, Any]]) -> list[str]:
    """The README's one table of headline figures, one or two rows per suite present."""
    rows: list[list[Any]] = []
    if fleet := figures.get("fleet"):
        m, n = fleet["median"], f"{fleet['nodes']:,}"
        rows += [
            [f"{n}-node fleet (perNode GPU/NPU/CPU), apply until all {n} pods Ready",
             f"{m['operator_create_s']:.3g} s", f"{m['raw_create_s']:.3g} s, the same "
             "DaemonSets applied with kubectl", f"{m['create_ratio']}"],
            [f"version update until all {n} pods updated and Ready (success)",
             f"{m['operator_update_s']:.3g} s ({m['operator_update_success']:.0%})",
             f"{m['raw_update_s']:.3g} s ({m['raw_update_success']:.0%})", f"{m['update_ratio']}"],
        ]  # fmt: skip
        if "rawsvc_update_s" in m:  # the same objects: the DaemonSets and the Services
            rows += [
                ["the same, against the DaemonSets and the operator's Services with kubectl "
                 "(apply / update)",
                 f"{m['operator_create_s']:.3g} s / {m['operator_update_s']:.3g} s",
                 f"{m['rawsvc_create_s']:.3g} s / {m['rawsvc_update_s']:.3g} s",
                 f"{m['create_ratio_svc']} / {m['update_ratio_svc']}"],
            ]  # fmt: skip
    if rollback := figures.get("rollback"):
        runs, fl = rollback["runs"], rollback["flagger"]["code_defaults"]
        deadlines = " / ".join(f"{r['progress_deadline_s']} s" for r in runs)
        rows += [
            [f"bad version: `RolledBack` after the progress deadline ({deadlines}; resync "
             f"{rollback['resync_seconds']} s)",
             " / ".join(f"+{r['rolled_back_condition_after_deadline_s']:.3g} s" for r in runs),
             f"Flagger's defaults: {fl['analysis_interval_s']} s analysis interval, "
             f"{fl['progress_deadline_s']} s progress deadline", ""],
            [f"bad version: all {rollback['nodes']:,} pods back on the stable revision after "
             "the deadline",
             " / ".join(f"+{r['all_pods_restored_after_deadline_s']:.3g} s" for r in runs)
             + f", Ready never below "
             f"{min(r['min_ready_fraction_during_bad_rollout'] for r in runs):.0%}", "", ""],
        ]  # fmt: skip
    if footprint := figures.get("footprint"):
        r = footprint["rows"][-1]
        rows.append([
            f"{r['edgemodels']:,} EdgeModels x 3 targets until all Ready (EdgeModels/s; peak "
            "RSS; change to rollout in status p50)",
            f"{r['operator_all_ready_s']:.3g} s ({r['edgemodels_per_s']}/s; "
            f"{r['operator_peak_rss_mib']:.0f} MiB; {r['change_to_status_ms_p50']:.3g} ms)",
            f"{r['raw_all_ready_s']:.3g} s, the same Deployments and Services with kubectl",
            f"{r['ratio']}",
        ])  # fmt: skip
    if ota := figures.get("ota"):
        gates = "; ".join(f"{gate} {g['median_s']:.3g} s"
                          for gate, g in ota["rollback_after_evidence"].items())  # fmt: skip
        u = ota["fleet_update"]
        rows += [
            [f"rollback after the first failing evidence (resync {ota['resync_seconds']} s)",
             gates, "", ""],
            [f"{ota['nodes']:,}-node update in waves, {u['offline_nodes']} offline, "
             f"{u['failing_nodes']} failing", f"{u['outcome']} in "
             f"{u['seconds_to_complete']:.0f} s: {u['status_summary']}", "", ""],
        ]  # fmt: skip
    if images := figures.get("images"):
        for m in images["models"]:
            rows.append([
                f"per-model image for amd64 + arm64, build and push ({m['model']})",
                f"{m['daemonless']['median_build_push_s']:.3g} s, through the registry API",
                f"{m['docker']['median_build_push_s']:.3g} s, Docker Engine API build + push",
                f"{1 / m['ratio_docker_over_daemonless']:.2g}",
            ])  # fmt: skip
    if realnode := figures.get("realnode"):
        modes = realnode["modes"]
        if "fetched" in modes and "built" in modes:
            f, b = modes["fetched"], modes["built"]
            rows += [
                ["real node, cold: `kubectl apply` to the first answer through the Service",
                 f"{f['median_cold_s']:.3g} s (model fetched by the pod), {b['median_cold_s']:.3g}"
                 " s (per-model image)", "", ""],
                ["real node, model-only update: image bytes the node's containerd pulls",
                 f"{f['median_update_pulled_bytes'] / 1e3:,.1f} kB (fetched: the pod downloads "
                 f"the {realnode['model_bytes'] / 1e3:,.1f} kB model itself), "
                 f"{b['median_update_pulled_bytes'] / 1e3:,.1f} kB (per-model image)",
                 f"{f['median_cold_pulled_bytes'] / 1e6:,.1f} MB, a cold pull", ""],
            ]  # fmt: skip
    return table(["what", "EdgeModel operator", "baseline", "ratio"], rows)


def footprint_lines(f: dict[str, Any]) -> list[str]:
    """N EdgeModels against the same workloads applied with kubectl, side by side."""
    g = f["goals"]

    def verdict(ok: bool) -> str:
        return "reached" if ok else "not reached"

    rows = []
    for r in f["rows"]:
        ok = r["goals_reached"]
        rows.append([
            f"{r['edgemodels']:,}", r["repeats"], f"{r['operator_all_ready_s']:.3g}",
            f"{r['raw_all_ready_s']:.3g}", f"{r['ratio']}x",
            f"{r['edgemodels_per_s']} ({verdict(ok['edgemodels_per_s'])})",
            f"{r['operator_peak_rss_mib']:.0f} ({verdict(ok['peak_rss_mib'])})",
            f"{r['change_to_status_ms_p50']:.3g} / {r['change_to_status_ms_p99']:.3g}",
            r["operator_requests_per_model_to_ready"],
            r["operator_requests_per_model_per_min_idle"],
        ])  # fmt: skip
    return [
        f"Fleet {f['fleet']}, {f['targets_per_model']}, operator resync {f['resync_seconds']} s "
        f"(its default). Baseline: {f['baseline']}. Goals: >= {g['edgemodels_per_s']} "
        f"EdgeModels/s, peak RSS <= {g['peak_rss_mib']} MiB, and within "
        f"{g['within_baseline_x']}x of the baseline where the control plane is the ceiling. "
        "Medians of the repeats (sides alternating which goes first), RSS the highest.",
        "",
        *table(
            ["EdgeModels", "repeats", "operator: all Ready (s)", "kubectl: all available (s)",
             "ratio", "EdgeModels/s (goal)", "peak RSS MiB (goal)",
             "change->rollout in status p50 / p99 (ms)", "requests/model to Ready",
             "requests/model/min idle"],
            rows,
        ),
    ]  # fmt: skip


def ota_lines(f: dict[str, Any]) -> list[str]:
    """Rollback per gate after the first evidence, and a fleet update in waves."""
    rows = [
        [gate, ", ".join(f"{x:.3g}" for x in g["runs_s"]), f"{g['median_s']:.3g}",
         "reached" if g["goal_reached"] else "not reached"]
        for gate, g in f["rollback_after_evidence"].items()
    ]  # fmt: skip
    u = f["fleet_update"]
    return [
        f"{f['nodes']:,} simulated nodes ({f['fleet']}), operator resync {f['resync_seconds']} s "
        f"(its default). Rollback from the first failing evidence the benchmark saw (for the "
        f"deadline: from the deadline) until RolledBack=True; goal <= {f['goal_s']} s.",
        "",
        *table(["gate", "runs (s)", "median (s)", "goal"], rows),
        "",
        f"Fleet update ({u['waves']}), {u['offline_nodes']} nodes offline and "
        f"{u['failing_nodes']} crash-looping on the new version: **{u['outcome']}** in "
        f'{u["seconds_to_complete"]:.0f} s; the status says "{u["status_summary"]}" '
        f"({u['nodes_reported_held']} node(s) held back by name); the benchmark counted "
        f"{u['counted_updated_ready']:,} nodes on the new version and Ready (success rate "
        f"{u['success_rate']:.1%}).",
    ]


FLEET_GOAL_X = 1.10  # the operator within 1.10x of the same DaemonSets applied with kubectl


def goals_lines(figures: dict[str, dict[str, Any]]) -> list[str]:
    """The scale goals, each with its figure and whether it was reached."""

    def verdict(ok: bool) -> str:
        return "reached" if ok else "**not reached**"

    rows: list[list[Any]] = []
    if fleet := figures.get("fleet"):
        m, n = fleet["median"], f"{fleet['nodes']:,}"
        baselines = [("", "raw", "the same DaemonSets")]
        if "rawsvc_update_s" in m:
            baselines.append(("_svc", "rawsvc", "the same DaemonSets and Services"))
        for suffix, raw, against in baselines:
            for what, side in (("apply", "create"), ("version update", "update")):
                key = f"{side}_ratio{suffix}"
                each = ", ".join(f"{r[f'operator_{side}_s'] / r[f'{raw}_{side}_s']:.2f}"
                                 for r in fleet["runs"])  # fmt: skip
                rows.append([f"{n}-node fleet, {what}: within {FLEET_GOAL_X:.2f}x of kubectl "
                             f"({against})", f"{m[key]}x (ratio of the medians of "
                             f"{fleet['repeats']} runs; each run: {each})",
                             verdict(m[key] <= FLEET_GOAL_X)])  # fmt: skip
    if footprint := figures.get("footprint"):
        g = footprint["goals"]
        r = max(footprint["rows"], key=lambda row: row["edgemodels"])
        ok, n = r["goals_reached"], f"{r['edgemodels']:,}"
        rows += [
            [f"{n} EdgeModels x 3 targets: >= {g['edgemodels_per_s']} EdgeModels/s until Ready",
             f"{r['edgemodels_per_s']}/s (kubectl's Deployments: {r['raw_edgemodels_per_s']}/s)",
             verdict(ok["edgemodels_per_s"])],
            [f"{n} EdgeModels: peak RSS <= {g['peak_rss_mib']} MiB",
             f"{r['operator_peak_rss_mib']:.0f} MiB", verdict(ok["peak_rss_mib"])],
            [f"{n} EdgeModels: within {g['within_baseline_x']}x of kubectl", f"{r['ratio']}x",
             verdict(ok["within_baseline_x"])],
        ]  # fmt: skip
    if ota := figures.get("ota"):
        for gate, g in ota["rollback_after_evidence"].items():
            rows.append([f"rollback within {ota['goal_s']} s of the first failing evidence "
                         f"({gate})", f"{g['median_s']:.3g} s (median of {len(g['runs_s'])})",
                         verdict(g["goal_reached"])])  # fmt: skip
    return table(["goal", "measured", "verdict"], rows)
