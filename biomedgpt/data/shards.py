"""Atomic webdataset shard writing, the `manifest.json` that describes a shard folder, and reading back.

Shards are plain POSIX tars named `{name}-{split}-{index:06d}.tar` (data_shards/README.md); each sample
is a group of members sharing one key (see `biomedgpt.data.schema`). Writing is atomic: a shard is
written as `.{file}.partial` in the same folder, and `write_dataset` renames every partial to its
final name only after the whole input went through, then writes `manifest.json` (itself via a
partial and `os.replace`). A crash or an exception therefore never leaves a final-named tar or a
manifest behind; the next run removes stale partials (so: one writer per folder at a time).
Tars are deterministic (mtime 0, owner 0): the same input gives the same sha256.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from biomedgpt.data.schema import SCHEMA_VERSION, SPLITS, Sample, encode_sample

MANIFEST_NAME = "manifest.json"
PARTIAL_SUFFIX = ".partial"
DEFAULT_MAX_BYTES = 1 << 30
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
SHARD_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)-(?P<split>train|val|test)-(?P<index>\d{6})\.tar$"
)
_MEMBER_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key/extension split


class ShardsExistError(FileExistsError):
    """The output folder already holds shards or a manifest and overwriting was not asked for."""


class ShardReadError(ValueError):
    """A tar cannot be read or its members do not group into samples."""


@dataclass(kw_only=True)
class ShardInfo:
    """One written shard, as recorded in manifest.json."""

    file: str
    """File name relative to the shard folder."""
    split: str
    num_samples: int
    bytes: int
    sha256: str
    tasks: dict[str, int] = field(default_factory=dict)
    """Samples per task in this shard."""
    modalities: dict[str, int] = field(default_factory=dict)
    """Samples per modality in this shard ("none" for text-only samples)."""


@dataclass(kw_only=True)
class SourceInfo:
    """Where the samples came from, as recorded in manifest.json."""

    name: str
    version: str | None = None
    sha256: str | None = None
    """Hash of the source file (e.g. the JSONL manifest), where there is one."""
    licence: str = "unknown"


def shard_filename(name: str, split: str, index: int) -> str:
    return f"{name}-{split}-{index:06d}.tar"


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{PARTIAL_SUFFIX}")


class _HashingFile:
    """A write-only file wrapper that hashes and counts what goes through it."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115  (closed in close())
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class ShardWriter:
    """Write samples of one split into `{name}-{split}-NNNNNN.tar` shards, atomically.

    `close()` renames the partials to their final names; `finish()` + `commit()` do the same in two
    steps so that `write_dataset` can commit several writers only once all of them succeeded.
    Leaving a `with` block on an exception calls `abort()`, which deletes the partials.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        name: str,
        split: str,
        max_samples_per_shard: int = 1000,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not NAME_RE.match(name):
            raise ValueError(f"shard name {name!r} must be letters, digits, '_' or '-' (no dots or slashes)")
        if max_samples_per_shard < 1 or max_bytes < 1:
            raise ValueError("max_samples_per_shard and max_bytes must be positive")
        self.out_dir = Path(out_dir)
        self.name, self.split = name, split
        self.max_samples_per_shard, self.max_bytes = max_samples_per_shard, max_bytes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.out_dir.glob(f".{name}-{split}-*.tar{PARTIAL_SUFFIX}"):
            stale.unlink()
        self._done: list[tuple[Path, ShardInfo]] = []
        self._file: _HashingFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._keys: set[str] = set()
        self._tasks: Counter[str] = Counter()
        self._modalities: Counter[str] = Counter()
        self._committed = False

    def write(self, sample: Sample) -> None:
        """Validate, encode and append one sample (its split must be this writer's)."""
        if self._committed:
            raise RuntimeError("writer already closed")
        if sample.split != self.split:
            raise ValueError(
                f"sample {sample.key!r} has split {sample.split!r}, writer is for {self.split!r}"
            )
        members = encode_sample(sample)
        size = sum(512 + -(-len(data) // 512) * 512 for data in members.values())
        if self._tar is not None and (
            len(self._keys) >= self.max_samples_per_shard or self._file.size + size > self.max_bytes
        ):
            self._finish_current()
        if self._tar is None:
            self._open_next()
        if sample.key in self._keys:
            raise ValueError(f"duplicate sample key {sample.key!r} in one shard")
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{sample.key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self._keys.add(sample.key)
        self._tasks[sample.task] += 1
        self._modalities[sample.modality or "none"] += 1

    def _open_next(self) -> None:
        final = self.out_dir / shard_filename(self.name, self.split, len(self._done))
        self._file = _HashingFile(partial_path(final))
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def _finish_current(self) -> None:
        self._tar.close()
        self._file.close()
        final = self.out_dir / shard_filename(self.name, self.split, len(self._done))
        info = ShardInfo(
            file=final.name,
            split=self.split,
            num_samples=len(self._keys),
            bytes=self._file.size,
            sha256=self._file.sha256.hexdigest(),
            tasks=dict(sorted(self._tasks.items())),
            modalities=dict(sorted(self._modalities.items())),
        )
        self._done.append((final, info))
        self._tar, self._file = None, None
        self._keys, self._tasks, self._modalities = set(), Counter(), Counter()

    def finish(self) -> list[ShardInfo]:
        """Close the current shard; every shard stays a partial until `commit()`."""
        if self._tar is not None:
            self._finish_current()
        return [info for _, info in self._done]

    def commit(self) -> list[ShardInfo]:
        """Rename every finished partial to its final name (os.replace, atomic per file)."""
        infos = self.finish()
        for final, _ in self._done:
            os.replace(partial_path(final), final)
        _fsync_dir(self.out_dir)
        self._committed = True
        return infos

    def close(self) -> list[ShardInfo]:
        return self.commit()

    def abort(self) -> None:
        """Delete every partial this writer made; nothing under a final name is touched."""
        if self._tar is not None:
            self._file.file.close()  # no tar.close(): a doomed file needs no end-of-archive blocks
            self._tar = None
        paths = [final for final, _ in self._done]
        paths.append(self.out_dir / shard_filename(self.name, self.split, len(self._done)))
        for final in paths:
            partial_path(final).unlink(missing_ok=True)
        self._done, self._committed = [], True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# manifest.json


def count_samples(shards: Sequence[ShardInfo]) -> dict[str, dict[str, int]]:
    """Samples per split and task: {"train": {"caption": 12, ...}, ...}."""
    counts: dict[str, Counter[str]] = {}
    for shard in shards:
        counts.setdefault(shard.split, Counter()).update(shard.tasks)
    order = sorted(counts, key=lambda split: (SPLITS.index(split) if split in SPLITS else len(SPLITS), split))
    return {split: dict(sorted(counts[split].items())) for split in order}


def write_manifest(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    shards: Sequence[ShardInfo],
    sources: Sequence[SourceInfo] = (),
    command_line: Sequence[str] | None = None,
) -> Path:
    """Write `manifest.json` next to the shards, atomically; returns its path."""
    from biomedgpt import __version__

    modalities: Counter[str] = Counter()
    for shard in shards:
        modalities.update(shard.modalities)
    by_split_task = count_samples(shards)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "generator": f"biomedgpt {__version__}",
        "command_line": list(command_line) if command_line is not None else None,
        "num_samples": sum(shard.num_samples for shard in shards),
        "num_shards": len(shards),
        "counts": by_split_task,
        "counts_by_task": dict(sorted(sum((Counter(t) for t in by_split_task.values()), Counter()).items())),
        "counts_by_split": {split: sum(tasks.values()) for split, tasks in by_split_task.items()},
        "counts_by_modality": dict(sorted(modalities.items())),
        "shards": [asdict(shard) for shard in shards],
        "sources": [asdict(source) for source in sources],
        "licences": sorted({source.licence for source in sources}),
    }
    path = Path(out_dir) / MANIFEST_NAME
    partial = partial_path(path)
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    _fsync_dir(path.parent)
    return path


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse `out_dir/manifest.json`; raises FileNotFoundError or ValueError."""
    path = Path(out_dir) / MANIFEST_NAME
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("shards"), list):
        raise ValueError(f"{path} is not a shard manifest (no 'shards' list)")
    return doc


# ---------------------------------------------------------------------------------------------
# Whole datasets


@dataclass(kw_only=True)
class DatasetSummary:
    """What `write_dataset` wrote."""

    out_dir: Path
    name: str
    shards: list[ShardInfo]
    manifest_path: Path

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return count_samples(self.shards)

    @property
    def num_samples(self) -> int:
        return sum(shard.num_samples for shard in self.shards)

    def one_line(self) -> str:
        by_split = ", ".join(f"{s} {sum(t.values())}" for s, t in self.counts.items())
        tasks: Counter[str] = Counter()
        for split_tasks in self.counts.values():
            tasks.update(split_tasks)
        by_task = ", ".join(f"{t} {n}" for t, n in sorted(tasks.items()))
        return (
            f"wrote {self.num_samples} samples ({by_split}; {by_task}) "
            f"in {len(self.shards)} shards to {self.out_dir}"
        )


def existing_outputs(out_dir: Path) -> list[Path]:
    """The manifest and every final-named shard in `out_dir` (what a new run would clobber)."""
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if p.name == MANIFEST_NAME or SHARD_RE.match(p.name)]
    return sorted(found)


def clean_partials(out_dir: Path) -> list[Path]:
    """Delete partial files a crashed run left behind; returns what was removed."""
    if not out_dir.is_dir():
        return []
    stale = [p for p in out_dir.iterdir() if p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_dataset(
    samples: Iterable[Sample],
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    overwrite: bool = False,
    max_samples_per_shard: int = 1000,
    max_bytes: int = DEFAULT_MAX_BYTES,
    sources: Sequence[SourceInfo] = (),
    command_line: Sequence[str] | None = None,
    progress: bool = True,
    total: int | None = None,
) -> DatasetSummary:
    """Write `samples` into per-split shards plus manifest.json; all or nothing.

    Refuses a folder that already holds shards or a manifest unless `overwrite`; then the old
    shards are replaced only after every new shard is fully written.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    old = existing_outputs(out)
    if old and not overwrite:
        raise ShardsExistError(f"{out} already holds {old[0].name} (and {len(old) - 1} more); pass overwrite")
    clean_partials(out)
    writers: dict[str, ShardWriter] = {}
    keys: set[str] = set()
    try:
        for sample in tqdm(samples, total=total, disable=not progress, unit="sample", desc=f"shard {name}"):
            if sample.key in keys:
                raise ValueError(f"duplicate sample key {sample.key!r}")
            keys.add(sample.key)
            if sample.split not in writers:
                writers[sample.split] = ShardWriter(
                    out,
                    name=name,
                    split=sample.split,
                    max_samples_per_shard=max_samples_per_shard,
                    max_bytes=max_bytes,
                )
            writers[sample.split].write(sample)
        if not keys:
            raise ValueError("no samples to write")
        for writer in writers.values():
            writer.finish()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    # Commit: drop the old manifest first so a crash in between never pairs it with new shards.
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    shards = [info for split in sorted(writers) for info in writers[split].commit()]
    new_files = {shard.file for shard in shards}
    for path in old:
        if path.name != MANIFEST_NAME and path.name not in new_files:
            path.unlink(missing_ok=True)
    manifest = write_manifest(out, name=name, shards=shards, sources=sources, command_line=command_line)
    return DatasetSummary(out_dir=out, name=name, shards=shards, manifest_path=manifest)


# ---------------------------------------------------------------------------------------------
# Reading back


def iter_tar_samples(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield {"__key__": key, ext: bytes, ...} per sample, grouping members as webdataset does.

    Raises `ShardReadError` on an unreadable tar, a member name without an extension, a key
    that reappears after another key, or a repeated member.
    """
    seen: set[str] = set()
    group: dict[str, Any] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                match = _MEMBER_RE.match(member.name)
                if match is None:
                    raise ShardReadError(f"{path}: member {member.name!r} has no extension")
                key, ext = match.groups()
                if group and group["__key__"] != key:
                    yield group
                    group = {}
                if not group:
                    if key in seen:
                        raise ShardReadError(f"{path}: key {key!r} appears twice")
                    seen.add(key)
                    group = {"__key__": key}
                if ext in group:
                    raise ShardReadError(f"{path}: member {member.name!r} appears twice")
                group[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardReadError(f"{path}: cannot read tar: {err}") from err
    if group:
        yield group
