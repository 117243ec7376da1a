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
