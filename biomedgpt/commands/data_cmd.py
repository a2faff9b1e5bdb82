"""`biomedgpt data verify DIR` and `biomedgpt data stats DIR [--json]`: check or describe a shard folder.

verify: every shard listed in manifest.json exists, has the recorded size and sha256, opens as a
tar, and every sample in it decodes and passes `Sample.validate()`; counts agree with the manifest;
no tar sits in the folder unlisted. Exit 1 on any failure, 0 otherwise.
stats: samples per split, task and modality, shards and bytes, read from the tars' JSON members.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedgpt.hashing import sha256_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="re-hash every shard, decode and validate every sample")
    verify.add_argument("dir", type=Path, help="shard folder (holds manifest.json)")
    stats = sub.add_parser("stats", help="samples per split, task and modality; shards; bytes")
    stats.add_argument("dir", type=Path, help="shard folder")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a directory")
        return 2
    if args.action == "verify":
        report = verify_dataset(args.dir)
        for line in report.warnings:
            print(f"warning: {line}")
        for line in report.failures:
            print(f"FAILED {line}")
        verdict = "FAILED" if report.failures else "OK"
        print(
            f"{verdict}: {report.shards} shards, {report.samples} samples checked, {len(report.failures)} failures"
        )
        return 1 if report.failures else 0
    try:
        stats = dataset_stats(args.dir)
    except (tarfile.TarError, OSError, ValueError) as err:
        print(f"error: cannot read the shards in {args.dir}: {err} (`biomedgpt data verify` says more)")
        return 1
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


@dataclass(kw_only=True)
class VerifyReport:
    """What `verify_dataset` found; an empty `failures` list means the folder is good."""

    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shards: int = 0
    samples: int = 0


def verify_dataset(out_dir: str | os.PathLike[str]) -> VerifyReport:
    """Check a shard folder against its manifest.json, down to every sample's schema."""
    from biomedgpt.data.shards import MANIFEST_NAME, PARTIAL_SUFFIX, read_manifest

    out, report = Path(out_dir), VerifyReport()
    report.warnings += [
        f"{p.name}: stale partial of an interrupted run" for p in _partials(out, PARTIAL_SUFFIX)
    ]
    try:
        manifest = read_manifest(out)
    except FileNotFoundError:
        report.failures.append(f"{MANIFEST_NAME}: missing")
        return report
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        report.failures.append(f"{MANIFEST_NAME}: unreadable: {err}")
        return report
    seen_keys: dict[str, str] = {}
    totals: Counter[tuple[str, str]] = Counter()
    for entry in manifest["shards"]:
        _verify_shard(out, entry, report, seen_keys, totals)
    listed = {entry.get("file") for entry in manifest["shards"]}
    report.failures += [
        f"{p.name}: not listed in {MANIFEST_NAME}" for p in sorted(out.glob("*.tar")) if p.name not in listed
    ]
    expected = Counter(
        {(split, task): n for split, tasks in manifest.get("counts", {}).items() for task, n in tasks.items()}
    )
    differ = [
        f"{split}/{task}: {expected[split, task]} listed, {totals[split, task]} found"
        for split, task in sorted(set(totals) | set(expected))
        if totals[split, task] != expected[split, task]
    ]
    if differ:
        report.failures.append(f"{MANIFEST_NAME}: counts differ from the shards': {'; '.join(differ)}")
    if manifest.get("num_samples") != report.samples:
        report.failures.append(
            f"{MANIFEST_NAME}: num_samples {manifest.get('num_samples')} but {report.samples} found"
        )
    return report


def _partials(out: Path, suffix: str) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(suffix))


def _verify_shard(
    out: Path, entry: dict[str, Any], report: VerifyReport, seen_keys: dict[str, str], totals: Counter
) -> None:
    from biomedgpt.data.schema import SampleError, decode_sample
    from biomedgpt.data.shards import ShardReadError, iter_tar_samples

    name = str(entry.get("file"))
    path = out / name
    report.shards += 1
    if not path.is_file():
        report.failures.append(f"{name}: missing")
        return
    size, digest = path.stat().st_size, sha256_file(path)
    if size != entry.get("bytes"):
        report.failures.append(f"{name}: {size} bytes, manifest says {entry.get('bytes')}")
    if digest != entry.get("sha256"):
        report.failures.append(f"{name}: sha256 {digest} differs from the manifest's {entry.get('sha256')}")
    tasks: Counter[str] = Counter()
    try:
        for members in iter_tar_samples(path):
            report.samples += 1
            key = members["__key__"]
            split, task = _split_and_task(members)  # counted even when the sample is invalid
            tasks[task] += 1
            totals[(split, task)] += 1
            if key in seen_keys:
                report.failures.append(f"{name}: sample {key!r} also in {seen_keys[key]}")
            seen_keys[key] = name
            try:
                decode_sample(members)
            except SampleError as err:
                report.failures.append(f"{name}: {err}")
                continue
            if split != entry.get("split"):
                report.failures.append(
                    f"{name}: sample {key!r}: split {split!r} in a {entry.get('split')} shard"
                )
    except ShardReadError as err:
        report.failures.append(str(err))
        return
    if sum(tasks.values()) != entry.get("num_samples") or dict(tasks) != entry.get("tasks", dict(tasks)):
        report.failures.append(f"{name}: holds {dict(tasks)}, manifest says {entry.get('tasks')}")


def _split_and_task(members: dict[str, Any]) -> tuple[str, str]:
    try:
        doc = json.loads(members["json"])
        return str(doc.get("split")), str(doc.get("task"))
    except (KeyError, ValueError, AttributeError):
        return "?", "?"


def dataset_stats(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts per split, task and modality, shards and bytes, from the tars' JSON members.

    The shards are those listed in manifest.json, or every `*.tar` in the folder without one.
    """
    from biomedgpt.data.schema import SPLITS
    from biomedgpt.data.shards import read_manifest

    out = Path(out_dir)
    try:
        files = [str(entry["file"]) for entry in read_manifest(out)["shards"]]
    except (FileNotFoundError, ValueError, KeyError):
        files = sorted(p.name for p in out.glob("*.tar"))
    by_split_task: dict[str, Counter[str]] = {}
    by_modality: Counter[str] = Counter()
    shards = []
    for name in files:
        count = 0
        with tarfile.open(out / name, mode="r:") as tar:
            for member in tar:
                if (
                    member.isreg()
                    and member.name.endswith(".json")
                    and "." not in member.name[:-5].rsplit("/", 1)[-1]
                ):
                    doc = json.loads(tar.extractfile(member).read())
                    by_split_task.setdefault(str(doc.get("split")), Counter())[str(doc.get("task"))] += 1
                    by_modality[str(doc.get("modality") or "none")] += 1
                    count += 1
        shards.append({"file": name, "num_samples": count, "bytes": (out / name).stat().st_size})
    tasks = sum(by_split_task.values(), Counter())
    order = sorted(by_split_task, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))
    by_split_task = {split: by_split_task[split] for split in order}
    return {
        "dir": str(out),
        "num_samples": sum(s["num_samples"] for s in shards),
        "num_shards": len(shards),
        "bytes": sum(s["bytes"] for s in shards),
        "by_split": {split: sum(t.values()) for split, t in by_split_task.items()},
        "by_task": dict(sorted(tasks.items())),
        "by_modality": dict(sorted(by_modality.items())),
        "by_split_task": {split: dict(sorted(t.items())) for split, t in by_split_task.items()},
        "shards": shards,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A small text table: tasks down, splits across, then modalities and shards."""
    splits = list(stats["by_split"])
    width = max([len("task"), *(len(t) for t in stats["by_task"])]) + 2
    lines = [
        f"{stats['dir']}: {stats['num_samples']} samples in {stats['num_shards']} shards, {stats['bytes']:,} bytes",
        "task".ljust(width) + "".join(f"{s:>8}" for s in [*splits, "total"]),
    ]
    for task, total in stats["by_task"].items():
        cells = [stats["by_split_task"][s].get(task, 0) for s in splits]
        lines.append(task.ljust(width) + "".join(f"{n:>8}" for n in [*cells, total]))
    lines.append(
        "total".ljust(width) + "".join(f"{n:>8}" for n in [*stats["by_split"].values(), stats["num_samples"]])
    )
    lines.append("modality: " + ", ".join(f"{m} {n}" for m, n in stats["by_modality"].items()))
    return "\n".join(lines)
