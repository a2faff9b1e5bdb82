"""NIfTI/NRRD volumes with masks to segmentation slices. Two pairing rules, tried in this order:

1. The Medical Segmentation Decathlon layout (Antonelli et al., Nat Commun 2022; also nnU-Net's raw
   layout): ``DIR/imagesTr/<case>.nii.gz`` + ``DIR/labelsTr/<case>.nii.gz`` (same file name; an
   image named ``<case>_0000.nii.gz`` pairs with ``labelsTr/<case>.nii.gz``), optional
   ``DIR/dataset.json`` whose ``modality["0"]`` sets the modality (CT, else MR). ``imagesTs`` (no
   labels) is not used.
2. Otherwise, a folder tree of pairs in one folder: a mask is a volume whose name (before .nii,
   .nii.gz or .nrrd) ends in ``_mask``, ``_label``, ``_labels`` or ``_seg``; its image has the same
   name without that suffix, optionally with ``_image`` (``X.nii.gz`` + ``X_mask.nii.gz``,
   ``X_image.nrrd`` + ``X_label.nrrd`` as in pyradiomics' data). Images without a mask are skipped.

Each volume is loaded with ``volumes.load_volume`` (reoriented to LPS), its mask with
``load_mask_volume`` (geometry checked), windowed once for the whole volume (CT in HU with the
soft-tissue window; other modalities between the volume's 1st and 99th percentiles) and cut along
the last axis with ``slice_volume``. Every slice with foreground (any nonzero label) is one
``segmentation`` sample with target ``--target`` (default "lesion"); of the slices without, an evenly
spaced ``--empty-fraction`` (default 0.1) is kept too, with an empty mask. Splits (80/10/10) are
hashed from the volume's name, so all slices of a volume share one split. 4-D (multi-channel)
volumes are skipped as unreadable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from biomedgpt.data.schema import Sample
from biomedgpt.ingest.converters.common import (
    Converter,
    ConvertOptions,
    KeyMaker,
    Prepared,
    SkipLog,
    hash_split,
    visible_files,
)
from biomedgpt.ingest.converters.images import fit_image, fit_mask

SOURCE = "volumes"
MASK_SUFFIXES = ("_mask", "_labels", "_label", "_seg")
NNUNET_CHANNEL = "_0000"


def _split_name(path: Path) -> tuple[str, str] | None:
    """(base, extension) of a volume file name, e.g. ("la_003", ".nii.gz"); None for other files."""
    from biomedgpt.ingest.volumes import volume_suffix

    suffix = volume_suffix(path)
    return (path.name[: -len(suffix)], suffix) if suffix else None


def _msd_pairs(root: Path, skips: SkipLog) -> list[tuple[str, Path, Path]]:
    labels = CONVERTER.require_dir(root / "labelsTr", "labelsTr/ folder (Decathlon layout)")
    pairs = []
    for image in visible_files(root / "imagesTr"):
        parts = _split_name(image)
        if parts is None:
            continue
        base, suffix = parts
        case = base[: -len(NNUNET_CHANNEL)] if base.endswith(NNUNET_CHANNEL) else base
        mask = labels / f"{case}{suffix}"
        if mask.is_file():
            pairs.append((case, image, mask))
        else:
            skips.add(image.relative_to(root).as_posix(), "no mask", f"expected labelsTr/{case}{suffix}")
    return pairs


def _folder_pairs(root: Path, skips: SkipLog) -> list[tuple[str, Path, Path]]:
    volumes = {p: parts for p in visible_files(root) if (parts := _split_name(p)) is not None}
    masks = {p for p, (base, _) in volumes.items() if base.lower().endswith(MASK_SUFFIXES)}
    by_name = {(p.parent, base): p for p, (base, _) in volumes.items() if p not in masks}
    pairs, paired = [], set()
    for mask in sorted(masks):
        base = volumes[mask][0]
        stem = base[: -len(next(s for s in MASK_SUFFIXES if base.lower().endswith(s)))]
        image = by_name.get((mask.parent, stem)) or by_name.get((mask.parent, f"{stem}_image"))
        if image is None:
            skips.add(mask.relative_to(root).as_posix(), "no image", f"expected {stem}[_image] next to it")
            continue
        paired.add(image)
        pairs.append((image.relative_to(root).parent.joinpath(stem).as_posix(), image, mask))
    for image in sorted(set(by_name.values()) - paired):
        skips.add(
            image.relative_to(root).as_posix(), "no mask", "no <name>_mask (or _label, _seg) next to it"
        )
    return pairs


def _msd_modality(root: Path) -> str | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    modality = json.loads(path.read_text(encoding="utf-8")).get("modality") or {}
    name = str(modality.get("0", "")) if isinstance(modality, dict) else ""
    return None if not name else "CT" if name.upper() == "CT" else "MR"


def _prepare(root: Path, options: ConvertOptions, skips: SkipLog) -> Prepared:
    CONVERTER.require_dir(root, "volume folder")
    is_msd = (root / "imagesTr").is_dir()
    pairs = _msd_pairs(root, skips) if is_msd else _folder_pairs(root, skips)
    if not pairs and not skips.items:
        raise CONVERTER.missing(root / "imagesTr", "image/mask pairs")
    modality = options.modality or (_msd_modality(root) if is_msd else None)
    return Prepared(samples=_samples(root, pairs, modality, options, skips), total=None)


def kept_slices(mask: np.ndarray, empty_fraction: float) -> list[int]:
    """Slices (last axis) with foreground, plus an evenly spaced share of the others, in order."""
    from biomedgpt.ingest.volumes import lesion_slices

    foreground = lesion_slices(mask)
    empty = sorted(set(range(mask.shape[-1])) - set(foreground))
    count = round(empty_fraction * len(empty))
    chosen = [empty[int(i)] for i in np.linspace(0, len(empty) - 1, count)] if count else []
    return sorted(set(foreground) | set(chosen))


def _samples(
    root: Path,
    pairs: list[tuple[str, Path, Path]],
    modality: str | None,
    options: ConvertOptions,
    skips: SkipLog,
) -> Iterator[Sample]:
    from biomedgpt.ingest.volumes import Volume, load_mask_volume, load_volume, slice_volume, window

    keys = KeyMaker()
    for name, image_path, mask_path in pairs:
        try:
            volume = load_volume(image_path, modality=modality)
            mask = load_mask_volume(mask_path, like=volume)
        except Exception as err:  # nibabel/pynrrd raise many types on bad files; all mean "unreadable"
            skips.add(
                image_path.relative_to(root).as_posix(), "unreadable volume", f"{type(err).__name__}: {err}"
            )
            continue
        shown = Volume(
            data=window(volume.data, modality=volume.modality), spacing=volume.spacing, axes=volume.axes
        )
        split = hash_split(name, salt=SOURCE)
        for index in kept_slices(mask.data, options.empty_fraction):
            pixels = fit_image(slice_volume(shown, index), options.max_side)
            labels = slice_volume(mask, index) != 0
            yield Sample(
                key=keys.make("vol", name, f"{index:04d}"),
                task="segmentation",
                split=split,
                image=pixels,
                fields={"target": options.target},
                mask=fit_mask(labels, pixels.shape),
                modality=volume.modality,
                source=SOURCE,
                extra={
                    "volume": name,
                    "slice": index,
                    "num_slices": volume.num_slices,
                    "foreground": bool(labels.any()),
                    "spacing": [float(s) for s in volume.spacing],
                    "axes": volume.axes,
                },
            )


CONVERTER = Converter(
    name="volumes",
    source=SOURCE,
    layout="DIR/imagesTr/<case>.nii.gz + DIR/labelsTr/<case>.nii.gz (Medical Segmentation Decathlon, "
    "optional DIR/dataset.json), or folders of pairs X.nii.gz|.nii|.nrrd + X_mask (or _label, _labels, "
    "_seg) with the same extension rules (the image may be named X_image)",
    prepare=_prepare,
)
