"""PathVQA (He et al., 2020, "PathVQA: 30000+ Questions for Medical Visual Question Answering"),
from its question tables in JSON or CSV, never from the released pickles.

The official release (github.com/UCSD-AI4H/PathVQA) stores the QA pairs as Python pickles,
``pvqa/qas/{train,val,test}/{split}_qa.pkl``. Unpickling runs arbitrary code chosen by whoever made
the file, and this project never unpickles untrusted files, so ``.pkl`` input is refused with an
error that says so. Supported instead: the same records re-distributed as JSON, JSON Lines or CSV,
with the release's image tree unchanged:

    DIR/<table for each split>      rows of {image, question, answer[, answer_type]}; image is the
                                    file name or stem (e.g. "train_0422"); looked up, first found
                                    wins, as qas/{s}/{s}_qa.EXT, qas/{s}.EXT, split/{s}.EXT, {s}.EXT
                                    for s in train, val, test and EXT in json, jsonl, csv
    DIR/images/{train,val,test}/<image>.jpg

DIR may also be the folder holding ``pvqa/``. Every split needs a table. ``answer_type`` is taken
from the row when it says closed/open, else derived as the paper defines it: yes/no answers are
closed-ended, all others open-ended. Modality: ``SM`` (slide microscopy, DICOM's code for pathology).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biomedgpt.data.schema import SPLITS, Sample
from biomedgpt.ingest.converters.common import (
    Converter,
    ConvertOptions,
    KeyMaker,
    Prepared,
    SkipLog,
    clean_extra,
    clean_text,
    read_records,
    vqa_fields,
)
from biomedgpt.ingest.converters.images import ImageReader

TABLE_PATTERNS = ("qas/{s}/{s}_qa.{ext}", "qas/{s}.{ext}", "split/{s}.{ext}", "{s}.{ext}")
TABLE_EXTS = ("json", "jsonl", "csv")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
SOURCE = "pathvqa"


class PickleRefusedError(ValueError):
    """Only pickled QA files were found; they are never loaded."""


def find_table(root: Path, split: str) -> Path:
    """The question table of `split` (see the module docstring); refuses pickles, names the layout."""
    for pattern in TABLE_PATTERNS:
        for ext in TABLE_EXTS:
            path = root / pattern.format(s=split, ext=ext)
            if path.is_file():
                return path
    pickles = [root / pattern.format(s=split, ext="pkl") for pattern in TABLE_PATTERNS]
    found = next((p for p in pickles if p.is_file()), None)
    if found is not None:
        raise PickleRefusedError(
            f"{found}: refusing to unpickle (loading a pickle runs code chosen by whoever made the "
            "file; biomedgpt never unpickles untrusted files). Convert the records to JSON or CSV "
            f"with columns image, question, answer and put them at {root}/qas/{split}/{split}_qa.json"
        )
    raise CONVERTER.missing(root / f"qas/{split}/{split}_qa.json", f"{split} question table")


def _root(path: Path) -> Path:
    nested = path / "pvqa"
    return nested if not (path / "images").is_dir() and nested.is_dir() else path


def _prepare(path: Path, options: ConvertOptions, skips: SkipLog) -> Prepared:
    root = _root(path)
    tables = {split: find_table(root, split) for split in SPLITS}
    image_dirs = {
        split: CONVERTER.require_dir(root / "images" / split, f"{split} image folder") for split in SPLITS
    }
    records = {split: read_records(table) for split, table in tables.items()}
    reader = ImageReader(skips, root=root, max_side=options.max_side)
    total = sum(len(rows) for rows in records.values())
    return Prepared(samples=_samples(records, tables, image_dirs, reader), total=total)


def _image_path(folder: Path, image: str) -> Path:
    direct = folder / image
    if Path(image).suffix.lower() in IMAGE_EXTS:
        return direct
    return next(
        (folder / f"{image}{ext}" for ext in IMAGE_EXTS if (folder / f"{image}{ext}").is_file()),
        folder / f"{image}.jpg",
    )


def _samples(
    records: dict[str, list[dict[str, Any]]],
    tables: dict[str, Path],
    image_dirs: dict[str, Path],
    reader: ImageReader,
) -> Iterator[Sample]:
    keys = KeyMaker()
    for split, rows in records.items():
        for index, record in enumerate(rows):
            item = f"{reader.relative(tables[split])} row {index}"
            question, answer = clean_text(record.get("question")), clean_text(record.get("answer"))
            image = clean_text(record.get("image"))
            if not (question and answer and image) or "/" in image or "\\" in image:
                reader.skips.add(item, "incomplete record", "needs image (a file name), question and answer")
                continue
            pixels = reader.read(_image_path(image_dirs[split], image), item=item)
            if pixels is None:
                continue
            closed = answer.lower() in ("yes", "no")
            fields = vqa_fields(question, answer, record.get("answer_type"))
            fields.setdefault("answer_type", "closed" if closed else "open")
            yield Sample(
                key=keys.make("pathvqa", split, f"{index:06d}"),
                task="vqa",
                split=split,
                image=pixels,
                fields=fields,
                modality="SM",
                source=SOURCE,
                extra={"row": index, **clean_extra(record, drop=("question", "answer", "answer_type"))},
            )


CONVERTER = Converter(
    name="pathvqa",
    source=SOURCE,
    layout="DIR (or DIR/pvqa) with a JSON/JSONL/CSV question table per split (columns image, "
    "question, answer) at qas/{s}/{s}_qa.EXT, qas/{s}.EXT, split/{s}.EXT or {s}.EXT for s in train, val, "
    "test, and images/{s}/<image>.jpg; the released .pkl files are refused (never unpickled)",
    prepare=_prepare,
)
