"""VQA-RAD (Lau et al., Sci Data 2018, "A dataset of clinically generated visual questions and
answers about radiology images"), as published on OSF (osf.io/89kps):

    DIR/VQA_RAD Dataset Public.json    a list of {qid, image_name, question, answer, answer_type
                                       (CLOSED | OPEN), phrase_type, question_type, image_organ, ...}
    DIR/VQA_RAD Image Folder/<image_name>    synpic*.jpg

Splits follow the common use of the release (the paper's test questions): phrase_type
``test_freeform`` or ``test_para`` -> test, every other question -> train. There is no val split.
Note that test questions ask about images that also appear in train (a property of the dataset).
Each question is one ``vqa`` sample: question, answer, and ``answer_type`` (``closed``/``open``,
lower-cased: the closed/open accuracy split of the evaluation needs it); the record's other fields
go to ``extra``. Modality is left unknown: the release mixes CT, MR and X-ray without saying which.
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

JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"
TEST_PHRASE_TYPES = frozenset({"test_freeform", "test_para"})
SOURCE = "vqa-rad"


def _prepare(root: Path, options: ConvertOptions, skips: SkipLog) -> Prepared:
    annotations = CONVERTER.require_file(root / JSON_NAME, "annotation file")
    images = CONVERTER.require_dir(root / IMAGE_DIR, "image folder")
    records = read_records(annotations)
    reader = ImageReader(skips, root=root, max_side=options.max_side)
    return Prepared(samples=_samples(records, images, reader), total=len(records), annotation=annotations)


def _samples(records: list[dict[str, Any]], images: Path, reader: ImageReader) -> Iterator[Sample]:
    keys = KeyMaker()
    for index, record in enumerate(records):
        qid = id_text(record.get("qid", index))
        item = f"qid {qid}"
        question, answer = clean_text(record.get("question")), clean_text(record.get("answer"))
        image_name = clean_text(record.get("image_name"))
        if not (question and answer and image_name):
            reader.skips.add(item, "incomplete record", "needs image_name, question and answer")
            continue
        pixels = reader.read(images / image_name, item=item)
        if pixels is None:
            continue
        phrase_type = clean_text(record.get("phrase_type")).lower()
        used = ("qid", "question", "answer", "answer_type")
        yield Sample(
            key=keys.make("vqarad", qid),
            task="vqa",
            split="test" if phrase_type in TEST_PHRASE_TYPES else "train",
            image=pixels,
            fields=vqa_fields(question, answer, record.get("answer_type")),
            source=SOURCE,
            extra={"qid": qid, **clean_extra(record, drop=used)},
        )


CONVERTER = Converter(
    name="vqa-rad",
    source=SOURCE,
    layout=f"DIR/{JSON_NAME} (a list of {{qid, image_name, question, answer, answer_type, "
    f"phrase_type, ...}}) and DIR/{IMAGE_DIR}/<image_name> (the OSF release of VQA-RAD)",
    prepare=_prepare,
)
