"""The count tables of ``data_shards/DEMO_DATA_CARD.md``, rendered from a build's ``demo_report.json``.

python -m biomedgpt.ingest.demo.card data_shards/demo      # prints markdown to paste into the card
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from biomedgpt.data.schema import SPLITS, TASKS


def counts_table(doc: dict[str, Any]) -> str:
    """Markdown: one row per (source, task) with train/val/test/total, then per-task totals."""
    lines = ["| source | task | train | val | test | total |", "|---|---|---:|---:|---:|---:|"]
    totals: dict[str, Counter[str]] = {}
    for source, rep in doc["sources"].items():
        for task in sorted(rep["counts"], key=TASKS.index):
            by_split = rep["counts"][task]
            totals.setdefault(task, Counter()).update(by_split)
            cells = [str(by_split.get(split, 0)) for split in SPLITS]
            lines.append(f"| {source} | {task} | {' | '.join(cells)} | {sum(by_split.values())} |")
    lines += ["", "| task | train | val | test | total |", "|---|---:|---:|---:|---:|"]
    grand: Counter[str] = Counter()
    for task in sorted(totals, key=TASKS.index):
        grand.update(totals[task])
        cells = [str(totals[task].get(split, 0)) for split in SPLITS]
        lines.append(f"| {task} | {' | '.join(cells)} | {sum(totals[task].values())} |")
    cells = [str(grand.get(split, 0)) for split in SPLITS]
    lines.append(f"| **all** | {' | '.join(cells)} | {sum(grand.values())} |")
    return "\n".join(lines)


def skipped_table(doc: dict[str, Any]) -> str:
    """Markdown: what each source left out, by reason."""
    lines = ["| source | left out (count per reason) |", "|---|---|"]
    for source, rep in doc["sources"].items():
        reasons = ", ".join(f"{why}: {n}" for why, n in rep["skip_reasons"].items()) or "nothing"
        lines.append(f"| {source} | {reasons} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m biomedgpt.ingest.demo.card SHARD_DIR", file=sys.stderr)
        return 2
    doc = json.loads((Path(args[0]) / "demo_report.json").read_text(encoding="utf-8"))
    print(counts_table(doc) + "\n\n" + skipped_table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
