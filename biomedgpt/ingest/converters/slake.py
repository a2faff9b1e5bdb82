"""SLAKE (Liu et al., ISBI 2021, "SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset for
Medical Visual Question Answering"), as released in Slake1.0 (med-vqa.com/slake):

    DIR/train.json, DIR/validate.json, DIR/test.json   lists of {img_id, img_name, question,
        answer, answer_type (OPEN | CLOSED), q_lang (en | zh), location, modality (CT | MRI |
        X-Ray), content_type, base_type, qid, triple}
    DIR/imgs/xmlab<N>/source.jpg   (img_name is "xmlab<N>/source.jpg"; mask.png and
        detection.json next to it are not used here)

DIR may also be the folder that holds ``Slake1.0/``. The published split files give the splits
(validate -> val). Only questions whose ``q_lang`` is ``--language`` (default ``en``) are kept;
``--language all`` keeps the Chinese ones too. Modality: CT -> CT, MRI -> MR, X-Ray -> CR (the code
every chest X-ray converter here uses). ``answer_type`` is kept lower-cased as in vqa-rad.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.ingest.converters.common import (
    Converter,
    ConvertOptions,
    KeyMaker,
    Prepared,
    SkipLog,
    clean_extra,
    clean_text,
    id_text,
    read_records,
    vqa_fields,
)
from biomedgpt.ingest.converters.images import ImageReader

SPLIT_FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}
MODALITIES = {"CT": "CT", "MRI": "MR", "X-RAY": "CR"}
SOURCE = "slake"


def _root(path: Path) -> Path:
    nested = path / "Slake1.0"
    return nested if not (path / "train.json").exists() and nested.is_dir() else path


def _prepare(path: Path, options: ConvertOptions, skips: SkipLog) -> Prepared:
    root = _root(path)
    tables = {
        split: CONVERTER.require_file(root / name, f"{split} split file")
        for split, name in SPLIT_FILES.items()
    }
    images = CONVERTER.require_dir(root / "imgs", "image folder")
    records = {split: read_records(table) for split, table in tables.items()}
    reader = ImageReader(skips, root=root, max_side=options.max_side)
    total = sum(len(rows) for rows in records.values())
    return Prepared(samples=_samples(records, images, reader, options.language), total=total)


def _samples(
    records: dict[str, list[dict[str, Any]]], images: Path, reader: ImageReader, language: str
) -> Iterator[Sample]:
    keys = KeyMaker()
    for split, rows in records.items():
        for index, record in enumerate(rows):
            if language != "all" and clean_text(record.get("q_lang")).lower() != language.lower():
                continue
            qid = id_text(record.get("qid", index))
            item = f"{SPLIT_FILES[split]} qid {qid}"
            question, answer = clean_text(record.get("question")), clean_text(record.get("answer"))
            image_name = clean_text(record.get("img_name"))
            if not (question and answer and image_name):
                reader.skips.add(item, "incomplete record", "needs img_name, question and answer")
                continue
            pixels = reader.read(images / image_name, item=item)
            if pixels is None:
                continue
            yield Sample(
                key=keys.make("slake", split, qid),
                task="vqa",
                split=split,
                image=pixels,
                fields=vqa_fields(question, answer, record.get("answer_type")),
                modality=MODALITIES.get(clean_text(record.get("modality")).upper()),
                source=SOURCE,
                extra={"qid": qid, **clean_extra(record, drop=("qid", "question", "answer", "answer_type"))},
            )


CONVERTER = Converter(
    name="slake",
    source=SOURCE,
    layout="DIR (or DIR/Slake1.0) with train.json, validate.json, test.json (lists of {img_name, "
    "question, answer, answer_type, q_lang, modality, qid, ...}) and imgs/xmlab<N>/source.jpg",
    prepare=_prepare,
)
