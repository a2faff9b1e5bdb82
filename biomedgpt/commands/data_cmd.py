"""`biomedgpt data verify DIR` and `biomedgpt data stats DIR [--json]`: check or describe a shard folder.

verify: every shard listed in manifest.json exists, has the recorded size and sha256, opens as a
tar, and every sample in it decodes and passes `Sample.validate()`; counts agree with the manifest;
no tar sits in the folder unlisted. Exit 1 on any failure, 0 otherwise.
stats: samples per split, task and modality, shards and bytes, read from the tars' JSON members with the
same reader as verify; a shard whose size or sample count disagrees with the manifest, an unreadable tar or a
member that is not a JSON object is a problem (exit 1), never a silently wrong count or a traceback.
Both refuse manifest `file` entries that leave the shard folder (`../../etc/passwd`, absolute paths).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    stats = dataset_stats(args.dir)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    if stats["problems"]:
        for line in stats["problems"]:
            print(f"error: {line}", file=sys.stderr)
        print(
            f"error: the counts above are incomplete: {len(stats['problems'])} problem(s) in {args.dir} "
            "(`biomedgpt data verify` checks every sample)",
            file=sys.stderr,
        )
        return 1
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
    entries = [entry for entry in manifest["shards"] if isinstance(entry, dict)]
    if len(entries) != len(manifest["shards"]):
        report.failures.append(f"{MANIFEST_NAME}: a 'shards' entry is not a JSON object")
    for entry in entries:
        _verify_shard(out, entry, report, seen_keys, totals)
    listed = {entry.get("file") for entry in entries}
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
    report.shards += 1
    try:
        path = shard_path(out, name)
    except ValueError as err:
        report.failures.append(str(err))
        return
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


def shard_path(out: Path, name: str) -> Path:
    """`out / name` for a manifest's `file` entry; ValueError when it is absolute or leaves the folder.

    A manifest is data: a crafted `"file": "../../../../etc/passwd"` must not make verify hash, or stats
    open, a file outside the shard folder. Symlinks are resolved before the check.
    """
    candidate = Path(name)
    root = out.resolve()
    if not name or candidate.is_absolute() or not (root / candidate).resolve().is_relative_to(root):
        raise ValueError(f"{name!r}: refused: the manifest names a path outside the shard folder")
    return out / candidate


def _sample_doc(members: dict[str, Any]) -> dict[str, Any] | None:
    """A sample's JSON member as a dict, or None when it is missing, unreadable or not a JSON object."""
    try:
        doc = json.loads(members["json"])
    except (KeyError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _split_and_task(members: dict[str, Any]) -> tuple[str, str]:
    doc = _sample_doc(members)
    return ("?", "?") if doc is None else (str(doc.get("split")), str(doc.get("task")))


def dataset_stats(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts per split, task and modality, shards and bytes, from the tars' JSON members.

    The shards are those listed in manifest.json, or every `*.tar` in the folder without one. Samples are
    grouped by the reader `verify` uses; `problems` lists what makes the counts untrustworthy: a listed path
    outside the folder, a missing or unreadable tar, a size or sample count that differs from the manifest,
    a sample without a JSON object (counted under split and task "?").
    """
    from biomedgpt.data.schema import SPLITS
    from biomedgpt.data.shards import read_manifest

    out = Path(out_dir)
    try:
        entries = [e if isinstance(e, dict) else {"file": str(e)} for e in read_manifest(out)["shards"]]
    except (FileNotFoundError, ValueError, KeyError):
        entries = [{"file": p.name} for p in sorted(out.glob("*.tar"))]
    by_split_task: dict[str, Counter[str]] = {}
    by_modality: Counter[str] = Counter()
    shards: list[dict[str, Any]] = []
    problems: list[str] = []
    for entry in entries:
        shard = _shard_stats(out, entry, by_split_task, by_modality, problems)
        if shard is not None:
            shards.append(shard)
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
        "problems": problems,
    }


def _shard_stats(
    out: Path,
    entry: dict[str, Any],
    by_split_task: dict[str, Counter[str]],
    by_modality: Counter[str],
    problems: list[str],
) -> dict[str, Any] | None:
    """Count one shard into the totals; None (and a problem) when its file cannot be used at all."""
    from biomedgpt.data.shards import ShardReadError, iter_tar_samples

    name = str(entry.get("file"))
    try:
        path = shard_path(out, name)
    except ValueError as err:
        problems.append(str(err))
        return None
    if not path.is_file():
        problems.append(f"{name}: missing")
        return None
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        problems.append(f"{name}: {size} bytes, manifest says {entry['bytes']} (truncated or modified)")
    count = 0
    try:
        for members in iter_tar_samples(path):
            count += 1
            doc = _sample_doc(members)
            if doc is None:
                problems.append(f"{name}: sample {members['__key__']!r} has no JSON object")
                doc = {"split": "?", "task": "?"}
            by_split_task.setdefault(str(doc.get("split")), Counter())[str(doc.get("task"))] += 1
            by_modality[str(doc.get("modality") or "none")] += 1
    except ShardReadError as err:
        problems.append(str(err))
    if "num_samples" in entry and count != entry["num_samples"]:
        problems.append(f"{name}: {count} samples read, manifest says {entry['num_samples']}")
    return {"file": name, "num_samples": count, "bytes": size}


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
