"""The README's reliability table, from the fault suite's committed results.

`make faults` runs tests/faults with FAULTS_RESULTS=tests/faults/results.json and then this
script, which rewrites the block between `<!-- reliability:start -->` and
`<!-- reliability:end -->` in README.md. `--check` changes nothing and exits 1 when the
block is not what the json gives (a unit test runs it, so a result typed by hand fails)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results.json"
BLOCK = re.compile(r"(<!-- reliability:start -->\n).*?(<!-- reliability:end -->)", re.S)


def _order(row: dict[str, Any]) -> tuple[int, str]:
    scenario = str(row["scenario"])
    digits = "".join(c for c in scenario if c.isdigit())
    return int(digits or 0), scenario


def table(doc: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d", time.gmtime(doc["started_unix"]))
    machine = doc.get("machine", {})
    lines = [
        f"Measured {when} on {machine.get('cores', '?')} cores (Python "
        f"{machine.get('python', '?')}): the whole suite took {doc.get('duration_s', 0):.0f} s, "
        f"its private cluster {doc.get('cluster_start_s', 0):.0f} s to start.",
        "",
        "| # | scenario | what is asserted | result |",
        "| --- | --- | --- | --- |",
    ]
    for row in sorted(doc["scenarios"], key=_order):
        result = f"{row['outcome']} ({row['seconds']:.0f} s)"
        lines.append(f"| {row['scenario']} | {row['title']} | {row['asserts']} | {result} |")
    return "\n".join(lines) + "\n"


def update(readme: str, doc: dict[str, Any]) -> str:
    if not BLOCK.search(readme):
        raise SystemExit("README.md has no <!-- reliability:start --> block")
    return BLOCK.sub(lambda m: m.group(1) + table(doc) + m.group(2), readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = update(readme.read_text(), json.loads(args.results.read_text()))
    if text == readme.read_text():
        return 0
    if args.check:
        print("README.md's reliability table differs from tests/faults/results.json; "
              "run python tests/faults/report.py", file=sys.stderr)  # fmt: skip
        return 1
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
