"""Shared pieces of the demo corpus builders: options, provenance, per-source reports and image helpers.

Every source module in this package turns the real files of one registry package
(``biomedgpt.ingest.registry.SOURCES``) into `Sample`s. They share:

- `DemoOptions`: what to build (per-source limit, image size, text caps, synthetic mix-in);
- `Provenance`: package, version, sha256 and licence from the registry table, written into every
  sample (`Sample.source` = ``"package==version"``, ``extra["source"]`` = the full record plus the
  member path and its own sha256) and into the manifest's ``sources``;
- `SourceReport`: counts per task and split, and every skipped file or item with its reason;
- image helpers: uint8 conversion, resizing to a maximum side, tight boxes from masks, position-based
  tiling (tiles never cross a split band, so no pixel of a test tile is in a training tile).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomedgpt.data.shards import SourceInfo
from biomedgpt.ingest import registry
from biomedgpt.ingest.volumes import window

IMAGE_TYPES = (
    "x-ray",
    "ct",
    "mri",
    "ultrasound",
    "nuclear medicine",
    "fluorescence microscopy",
    "h&e histology",
    "immunohistochemistry",
    "fundus photograph",
)
"""The closed label set of the demo's classification task ("what kind of image is this?")."""
_KEY_JUNK = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """What `build_demo` writes; the defaults give the full demo corpus."""

    limit: int | None = None
    """At most this many samples per source (``None``: all); for quick builds and tests."""
    max_side: int = 512
    """Images larger than this on their longer side are downsampled (aspect kept)."""
    text_cap: int = 2000
    """At most this many samples per text task and source (IU X-ray, PubMed)."""
    synthetic: int = 0
    """Number of SYNTHETIC samples mixed in (tagged ``extra.synthetic``); 0 keeps the corpus real."""
    seed: int = 0
    """Seed of the synthetic samples and of the text-infilling span draws."""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"demo limit must be >= 1 (or None for no limit), got {self.limit}")
        if self.max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {self.max_side}")
        if self.text_cap < 1 or self.synthetic < 0 or self.seed < 0:
            raise ValueError("text_cap must be >= 1, synthetic and seed >= 0")


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where a sample comes from: one entry of `registry.SOURCES`."""

    package: str
    version: str
    sha256: str | None
    """sha256 of the wheel or sdist (``None`` for an installed package: see the member hashes)."""
    licence: str

    @classmethod
    def of(cls, name: str) -> Provenance:
        src = registry.get_source(name)
        return cls(package=src.name, version=src.version, sha256=src.sha256, licence=src.licence)

    @property
    def tag(self) -> str:
        """The value of `Sample.source`: ``"package==version"``."""
        return f"{self.package}=={self.version}"

    def record(self, member: str, data: bytes | None = None) -> dict[str, Any]:
        """The ``extra["source"]`` record: the registry fields plus the member and its sha256."""
        return {
            "package": self.package,
            "version": self.version,
            "sha256": self.sha256,
            "licence": self.licence,
            "member": member,
            "member_sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        }

    def source_info(self) -> SourceInfo:
        return SourceInfo(name=self.package, version=self.version, sha256=self.sha256, licence=self.licence)


@dataclass(kw_only=True)
class SourceReport:
    """What one source module produced and skipped (written to ``demo_report.json``)."""

    name: str
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Samples per (task, split)."""
    skipped: list[str] = field(default_factory=list)
    """``"item: reason"`` for every file, frame or tile left out."""
    skip_reasons: Counter[str] = field(default_factory=Counter)
    """How many items were skipped per short reason (e.g. ``"needs a decoder"``)."""

    def skip(self, item: str, reason: str, *, kind: str) -> None:
        self.skipped.append(f"{item}: {reason}")
        self.skip_reasons[kind] += 1

    def count(self, task: str, split: str) -> None:
        self.counts[(task, split)] += 1

    @property
    def num_samples(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        by_task: dict[str, dict[str, int]] = {}
        for (task, split), n in sorted(self.counts.items()):
            by_task.setdefault(task, {})[split] = n
        return {
            "samples": self.num_samples,
            "counts": by_task,
            "skip_reasons": dict(sorted(self.skip_reasons.items())),
            "skipped": self.skipped,
        }


def make_key(*parts: object) -> str:
    """A sample key from parts: joined by ``-``, anything but letters, digits, ``_``, ``-`` -> ``_``."""
    key = "-".join(_KEY_JUNK.sub("_", str(p)).strip("_") for p in parts)
    if not key or len(key) > 128:
        raise ValueError(f"sample key {key!r} is empty or longer than 128 characters")
    return key


def hash_split(identity: str, *, val: float = 0.1, test: float = 0.1) -> str:
    """train/val/test from a stable hash of ``identity`` (every sample of one item gets one split)."""
    unit = int.from_bytes(hashlib.sha256(identity.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if unit < test else ("val" if unit < test + val else "train")


def archive_member(name: str, member: str) -> bytes:
    """The bytes of ``member`` inside registry source ``name``'s wheel or sdist, read in memory.

    Nothing is unpacked to disk (the IU X-ray reports must never be written outside the output).
    """
    archive = registry.fetch(name)
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise registry.RegistryError(f"{archive.name} has no member {member!r}") from None
    with tarfile.open(archive) as tf:
        try:
            handle = tf.extractfile(member)
        except KeyError:
            handle = None
        if handle is None:
            raise registry.RegistryError(f"{archive.name} has no regular file {member!r}")
        with handle:
            return handle.read()


def cached_archive(name: str) -> Path | None:
    """The cached, sha256-verified wheel/sdist of ``name``, or ``None`` (never downloads)."""
    src = registry.get_source(name)
    if src.dist == "installed" or src.filename is None:
        return None
    path = registry.cache_dir() / src.name / src.filename
    return path if path.is_file() and registry.sha256_file(path) == src.sha256 else None


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 kept; other dtypes scaled by their 1st..99th percentile (``volumes.window``)."""
    if image.dtype == np.uint8:
        return image
    if image.ndim == 3:
        lo, hi = (float(v) for v in np.percentile(image, [1.0, 99.0]))
        return window(image, modality=None, window=((lo + hi) / 2.0, max(hi - lo, 1e-6)))
    return window(image, modality=None)


def resize_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downsample a uint8 (H, W) or (H, W, 3) image so its longer side is at most ``max_side``."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    from PIL import Image

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def mask_box(mask: np.ndarray) -> list[int] | None:
    """Tight box ``[x0, y0, x1, y1]`` of the nonzero pixels in pixel-edge coordinates, or ``None``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


@dataclass(frozen=True)
class Tile:
    """One crop: top-left corner, side and the split of the band it lies in."""

    x0: int
    y0: int
    size: int
    split: str

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y0 : self.y0 + self.size, self.x0 : self.x0 + self.size]


def _starts(lo: int, hi: int, size: int, stride: int) -> list[int]:
    """Tile starts in [lo, hi - size] every ``stride`` px, plus one flush with ``hi``."""
    if hi - lo < size:
        return []
    starts = list(range(lo, hi - size + 1, stride))
    if starts[-1] != hi - size:
        starts.append(hi - size)
    return starts


def split_bands(width: int, band: int) -> dict[str, tuple[int, int]]:
    """Column bands: the right-most ``band`` px are test, the ``band`` px left of them val, the rest train.

    An image narrower than ``3 * band`` gets no val band (train and test only); narrower than
    ``2 * band``, train only.
    """
    if width >= 3 * band:
        return {
            "train": (0, width - 2 * band),
            "val": (width - 2 * band, width - band),
            "test": (width - band, width),
        }
    if width >= 2 * band:
        return {"train": (0, width - band), "test": (width - band, width)}
    return {"train": (0, width)}


def position_tiles(
    height: int,
    width: int,
    *,
    size: int,
    train_stride: int,
    eval_stride: int | None = None,
    band: int | None = None,
    along: str = "columns",
) -> list[Tile]:
    """Square tiles that each lie inside one band of `split_bands(extent, band or size)`.

    Bands run over the columns (right-most band test) or, with ``along="rows"``, over the rows
    (bottom band test). Train tiles overlap (``train_stride`` < ``size`` gives more, shifted views);
    val and test tiles use ``eval_stride`` (default ``size``: no overlap). Tiles never cross a band
    edge, so the split is by position and no pixel is shared between splits. Give several tile
    sizes of one image the same ``band`` so that their bands agree.
    """
    if along not in {"columns", "rows"}:
        raise ValueError(f"along must be 'columns' or 'rows', got {along!r}")
    by_rows = along == "rows"
    tiles = []
    for split, (lo, hi) in split_bands(height if by_rows else width, band or size).items():
        stride = train_stride if split == "train" else (eval_stride or size)
        across = _starts(0, width if by_rows else height, size, stride)
        for start in _starts(lo, hi, size, stride):
            for other in across:
                x0, y0 = (other, start) if by_rows else (start, other)
                tiles.append(Tile(x0, y0, size, split))
    return sorted(tiles, key=lambda t: (t.y0, t.x0))


def pick(options: tuple[str, ...] | list[str], identity: str) -> str:
    """A deterministic choice among template variants, from a hash of ``identity``."""
    digest = hashlib.sha256(identity.encode("utf-8")).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]
