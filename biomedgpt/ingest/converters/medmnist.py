"""MedMNIST v2 / MedMNIST+ 2-D datasets (Yang et al., Sci Data 2023, "MedMNIST v2"), one .npz file
as published (zenodo record 6496656 and its MedMNIST+ sizes):

    <flag>[_<size>].npz    train_images, train_labels, val_images, val_labels, test_images,
                           test_labels; images uint8 (N, H, W) or (N, H, W, 3) with H = W in
                           28, 64, 128, 224; labels (N, 1) class indices, or (N, C) 0/1 for the
                           multi-label chestmnist

--input is the .npz file or a folder holding exactly one. The flag (``--flag``, default: the file
name without the size suffix) picks the class names: those of MedMNIST's own INFO table for the
twelve 2-D flags below, or ``--labels`` (JSON ``{"0": name, ...}`` or ``[name, ...]``) for any flag.
Each image is one ``classification`` sample whose label is the class name; the published splits are
kept. Multi-label rows (chestmnist) get ONE sample whose label joins the positive class names in
class order with ", " ("effusion, mass"), and "no finding" when none is positive: one image, one
target, so training stays consistent and exact-match accuracy is defined (one sample per positive
label would give the same image contradictory targets). 3-D MedMNIST (N, D, H, W) is refused.
Images are streamed from the zip member a row at a time (never pickled, never all in memory).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from biomedgpt.data.schema import SPLITS, Sample
from biomedgpt.ingest.converters.common import Converter, ConvertOptions, KeyMaker, Prepared, SkipLog
from biomedgpt.ingest.converters.images import fit_image

NO_FINDING = "no finding"
_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen")  # fmt: skip
LABELS: dict[str, tuple[str, ...]] = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
    "chestmnist": ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                   "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"),
    "tissuemnist": ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
                    "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}  # fmt: skip
"""Class names, index order, as in MedMNIST's medmnist/info.py INFO[flag]["label"] (v2.1)."""
MODALITIES = {"pathmnist": "SM", "chestmnist": "CR", "dermamnist": "XC", "octmnist": "OPT",
              "pneumoniamnist": "CR", "retinamnist": "OP", "breastmnist": "US", "bloodmnist": "SM",
              "tissuemnist": "SM", "organamnist": "CT", "organcmnist": "CT", "organsmnist": "CT"}  # fmt: skip
"""DICOM modality codes of the source images (SM microscopy, XC external camera, OP fundus photo)."""


def _npz_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(p for p in path.glob("*.npz") if not p.name.startswith("."))
    if len(found) != 1:
        what = (
            "no .npz file" if not found else f"{len(found)} .npz files ({', '.join(p.name for p in found)})"
        )
        raise CONVERTER.missing(path / "<flag>.npz", f"exactly one .npz file ({what} here; pass the file)")
    return found[0]


def class_names(flag: str, labels: Path | None) -> list[str]:
    if labels is None:
        if flag not in LABELS:
            raise ValueError(
                f"medmnist flag {flag!r} has no known class names (known: {', '.join(LABELS)}); pass --labels"
            )
        return list(LABELS[flag])
    doc = json.loads(labels.read_text(encoding="utf-8"))
    if isinstance(doc, dict):
        try:
            doc = [doc[str(i)] for i in range(len(doc))]
        except KeyError as err:
            raise ValueError(f"{labels}: keys must be the indices 0..{len(doc) - 1}, missing {err}") from None
    if not isinstance(doc, list) or not doc or not all(isinstance(n, str) and n.strip() for n in doc):
        raise ValueError(f'{labels}: expected {{"0": name, ...}} or [name, ...] with non-empty names')
    return doc


def _read_npy_header(f: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an open .npy stream (the stream is left at the first data byte)."""
    version = np.lib.format.read_magic(f)
    read_header = (
        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(f)
    if fortran or dtype.hasobject:
        raise ValueError(f"{where}: {'Fortran-ordered' if fortran else 'object'} arrays are not supported")
    return tuple(int(n) for n in shape), dtype


def _image_shape(npz: Path, member: str) -> tuple[int, ...]:
    with zipfile.ZipFile(npz) as archive, archive.open(member) as f:
        return _read_npy_header(f, f"{npz}:{member}")[0]


def _image_rows(npz: Path, member: str) -> Iterator[np.ndarray]:
    """The rows of an image array, read from the zip stream one at a time."""
    with zipfile.ZipFile(npz) as archive, archive.open(member) as f:
        shape, dtype = _read_npy_header(f, f"{npz}:{member}")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        for _ in range(shape[0]):
            yield np.frombuffer(f.read(row_bytes), dtype=dtype).reshape(shape[1:])


def _label(row: np.ndarray, names: list[str]) -> tuple[str, dict] | None:
    """(label text, extra) of one label row, or None when an index is out of range."""
    values = np.asarray(row).reshape(-1)
    if values.size == 1:
        index = int(values[0])
        return (names[index], {"label_index": index}) if 0 <= index < len(names) else None
    if values.size != len(names):
        return None
    positive = [names[i] for i in np.flatnonzero(values)]
    return (", ".join(positive) or NO_FINDING), {"labels": positive}


def _read_arrays(npz: Path) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    """({split: labels}, {split: image shape}); the images stay on disk."""
    try:
        with np.load(npz, allow_pickle=False) as arrays:
            needed = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
            missing = [name for name in needed if name not in arrays.files]
            if missing:
                raise CONVERTER.missing(npz, f"array {missing[0]} inside the .npz")
            labels = {split: arrays[f"{split}_labels"] for split in SPLITS}
        return labels, {split: _image_shape(npz, f"{split}_images.npy") for split in SPLITS}
    except (zipfile.BadZipFile, EOFError, ValueError) as err:  # np.load says ValueError for a non-npz
        raise ValueError(f"{npz}: not a readable .npz file ({type(err).__name__}: {err})") from err


def _prepare(path: Path, options: ConvertOptions, skips: SkipLog) -> Prepared:
    npz = _npz_file(path)
    flag = options.flag or re.sub(r"_\d+$", "", npz.name[: -len(".npz")]).lower()
    names = class_names(flag, options.labels)
    labels, shapes = _read_arrays(npz)
    for split, shape in shapes.items():
        if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 3)) or len(labels[split]) != shape[0]:
            raise ValueError(
                f"{npz}: {split}_images has shape {shape} with {len(labels[split])} labels; expected "
                "(N, H, W) or (N, H, W, 3) images and N labels (3-D MedMNIST is not supported)"
            )
    samples = _samples(npz, flag, names, labels, skips, options.max_side)
    return Prepared(
        samples=samples, total=sum(s[0] for s in shapes.values()), annotation=npz, default_name=flag
    )


def _samples(
    npz: Path,
    flag: str,
    names: list[str],
    labels: dict[str, np.ndarray],
    skips: SkipLog,
    max_side: int | None,
) -> Iterator[Sample]:
    keys = KeyMaker()
    for split in SPLITS:
        for index, pixels in enumerate(_image_rows(npz, f"{split}_images.npy")):
            found = _label(labels[split][index], names)
            if found is None:
                detail = f"{labels[split][index].tolist()} for {len(names)} classes"
                skips.add(f"{split}_labels[{index}]", "bad label", detail)
                continue
            label, extra = found
            yield Sample(
                key=keys.make(flag, split, f"{index:06d}"),
                task="classification",
                split=split,
                image=fit_image(pixels, max_side),
                fields={"label": label},
                modality=MODALITIES.get(flag),
                source=f"medmnist-{flag}",
                extra={"index": index, **extra},
            )


CONVERTER = Converter(
    name="medmnist",
    source="medmnist",
    layout="a MedMNIST .npz file (or a folder with exactly one) holding train_images, train_labels, "
    "val_images, val_labels, test_images, test_labels; class names from the flag or --labels",
    prepare=_prepare,
)
