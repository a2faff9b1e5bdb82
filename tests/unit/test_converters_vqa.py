"""VQA converters (vqa-rad, slake, pathvqa) on tiny fixtures written in each dataset's layout."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedgpt.commands.data_cmd import verify_dataset
from biomedgpt.data.schema import Sample, decode_sample
from biomedgpt.data.shards import iter_tar_samples
from biomedgpt.ingest.converters import convert
from biomedgpt.ingest.converters.common import USER_LICENCE, ConvertOptions, LayoutError
from biomedgpt.ingest.converters.pathvqa import PickleRefusedError


def read_back(out: Path) -> dict[str, Sample]:
    """Every sample of every shard in `out`, decoded and validated, by key."""
    samples = {}
    for tar in sorted(out.glob("*.tar")):
        for group in iter_tar_samples(tar):
            sample = decode_sample(group)
            samples[sample.key] = sample
    return samples


def assert_verifies(out: Path) -> None:
    report = verify_dataset(out)
    assert report.failures == [], report.failures


def _gray(path: Path, shape=(12, 16), value=60) -> np.ndarray:
    pixels = (np.arange(np.prod(shape)).reshape(shape) % 7 * 20 + value).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _rgb(path: Path, shape=(10, 10)) -> None:
    pixels = np.zeros((*shape, 3), np.uint8)
    pixels[..., 0], pixels[..., 2] = 200, 40
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_vqa_rad(root: Path) -> Path:
    """Six questions: two train, two test (test_freeform, test_para), one corrupt and one missing image."""
    images = root / "VQA_RAD Image Folder"
    _gray(images / "synpic100.jpg")
    _rgb(images / "synpic200.jpg")
    (images / "synpic300.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")

    def record(qid, image, question, answer, answer_type, phrase_type):
        return (
            f'{{"qid": {qid}, "image_name": "{image}", "question": "{question}", "answer": {answer}, '
            f'"answer_type": "{answer_type}", "phrase_type": "{phrase_type}", "image_organ": "CHEST", '
            '"question_rephrase": NaN}'
        )

    # Written as text: the published file was exported with NaN for empty cells, which json accepts.
    rows = [
        record(1, "synpic100.jpg", "is there a fracture?", '"No"', "CLOSED", "freeform"),
        record(2, "synpic100.jpg", "where is the  lesion?", '"left lung"', "OPEN", "test_freeform"),
        record(3, "synpic200.jpg", "what modality is this?", '"CT"', "OPEN", "test_para"),
        record(4, "synpic300.jpg", "corrupt image?", '"yes"', "CLOSED", "freeform"),
        record(5, "synpic999.jpg", "missing image?", '"yes"', "CLOSED", "freeform"),
        record(6, "synpic200.jpg", "how many lesions?", "2", "OPEN", "para"),
    ]
    (root / "VQA_RAD Dataset Public.json").write_text("[" + ",\n".join(rows) + "]")
    return root


def test_vqa_rad(tmp_path):
    root = write_vqa_rad(tmp_path / "VQA_RAD")
    out = tmp_path / "out"
    result = convert("vqa-rad", root, out, progress=False)
    samples = read_back(out)
    assert sorted(samples) == ["vqarad-1", "vqarad-2", "vqarad-3", "vqarad-6"]
    assert {k: s.split for k, s in samples.items()} == {
        "vqarad-1": "train",
        "vqarad-2": "test",
        "vqarad-3": "test",
        "vqarad-6": "train",
    }
    first = samples["vqarad-1"]
    assert first.task == "vqa" and first.source == "vqa-rad"
    assert first.fields == {"question": "is there a fracture?", "answer": "No", "answer_type": "closed"}
    assert samples["vqarad-2"].fields["question"] == "where is the lesion?"  # whitespace collapsed
    assert samples["vqarad-6"].fields == {
        "question": "how many lesions?",
        "answer": "2",
        "answer_type": "open",
    }
    assert first.extra["phrase_type"] == "freeform" and first.extra["image_organ"] == "CHEST"
    assert "question_rephrase" not in first.extra  # NaN dropped, not written as invalid JSON
    assert first.image.shape == (12, 16) and first.image.dtype == np.uint8
    assert samples["vqarad-3"].image.shape == (10, 10, 3)
    assert sorted((s.item, s.kind) for s in result.skipped) == [
        ("qid 4", "unreadable image"),
        ("qid 5", "missing image"),
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"train": {"vqa": 2}, "test": {"vqa": 2}}
    assert manifest["licences"] == [USER_LICENCE]
    assert manifest["sources"][0]["name"] == "vqa-rad" and len(manifest["sources"][0]["sha256"]) == 64
    assert_verifies(out)


def test_vqa_rad_missing_layout_names_expected_path(tmp_path):
    with pytest.raises(LayoutError) as err:
        convert("vqa-rad", tmp_path, tmp_path / "out", progress=False)
    assert "VQA_RAD Dataset Public.json" in str(err.value) and "VQA_RAD Image Folder" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_all_items_skipped_is_an_error_that_says_why(tmp_path):
    root = write_vqa_rad(tmp_path / "VQA_RAD")
    for image in (root / "VQA_RAD Image Folder").iterdir():
        image.write_bytes(b"broken")
    with pytest.raises(
        ValueError, match=r"no usable samples.*skipped 6 \(5 unreadable image, 1 missing image\)"
    ):
        convert("vqa-rad", root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def write_slake(root: Path) -> Path:
    base = root / "Slake1.0"
    _gray(base / "imgs" / "xmlab0" / "source.jpg")
    _rgb(base / "imgs" / "xmlab1" / "source.jpg")

    def q(qid, img, question, answer, lang="en", kind="CLOSED", modality="MRI"):
        return {
            "img_id": int(img[5:].split("/")[0]),
            "img_name": img,
            "question": question,
            "answer": answer,
            "q_lang": lang,
            "answer_type": kind,
            "modality": modality,
            "location": "Lung",
            "qid": qid,
        }

    tables = {
        "train.json": [
            q(1, "xmlab0/source.jpg", "Is this an MRI?", "Yes"),
            q(2, "xmlab0/source.jpg", "这是核磁共振吗?", "是的", lang="zh"),
            q(3, "xmlab1/source.jpg", "Which organ is abnormal?", "Lung", kind="OPEN", modality="X-Ray"),
        ],
        "validate.json": [q(1, "xmlab1/source.jpg", "Is there a nodule?", "No", modality="CT")],
        "test.json": [q(1, "xmlab0/source.jpg", "Where is the liver?", "Left", kind="OPEN")],
    }
    for name, rows in tables.items():
        (base / name).write_text(json.dumps(rows, ensure_ascii=False))
    return root


def test_slake(tmp_path):
    root = write_slake(tmp_path / "slake")  # the folder holding Slake1.0/
    out = tmp_path / "out"
    convert("slake", root, out, progress=False)
    samples = read_back(out)
    assert sorted(samples) == ["slake-test-1", "slake-train-1", "slake-train-3", "slake-val-1"]
    assert samples["slake-val-1"].split == "val" and samples["slake-val-1"].modality == "CT"
    assert samples["slake-train-1"].modality == "MR" and samples["slake-train-3"].modality == "CR"
    assert samples["slake-train-3"].fields == {
        "question": "Which organ is abnormal?",
        "answer": "Lung",
        "answer_type": "open",
    }
    assert samples["slake-train-3"].extra["location"] == "Lung"
    assert_verifies(out)

    everything = tmp_path / "all"
    convert("slake", root, everything, options=ConvertOptions(language="all"), progress=False)
    chinese = read_back(everything)["slake-train-2"]
    assert chinese.fields["answer"] == "是的" and chinese.extra["q_lang"] == "zh"


def test_slake_missing_split_file(tmp_path):
    root = write_slake(tmp_path / "slake")
    (root / "Slake1.0" / "validate.json").unlink()
    with pytest.raises(LayoutError, match=r"validate\.json: val split file not found"):
        convert("slake", root, tmp_path / "out", progress=False)


def write_pathvqa(root: Path) -> Path:
    """Tables in three supported places: qas/train/train_qa.json, qas/val.csv, test.jsonl."""
    for split, stems in {
        "train": ["train_0001", "train_0002"],
        "val": ["val_0001"],
        "test": ["test_0001"],
    }.items():
        for stem in stems:
            _gray(root / "images" / split / f"{stem}.jpg", value=30)
    (root / "qas" / "train").mkdir(parents=True)
    train = [
        {"image": "train_0001", "question": "is this tissue malignant?", "answer": "yes"},
        {"image": "train_0002.jpg", "question": "what does this show?", "answer": "a granuloma"},
        {"image": "train_0003", "question": "missing?", "answer": "no"},
    ]
    (root / "qas" / "train" / "train_qa.json").write_text(json.dumps(train))
    (root / "qas" / "val.csv").write_text("image,question,answer\nval_0001,are nuclei visible?,No\n")
    (root / "test.jsonl").write_text(
        json.dumps({"image": "test_0001", "question": "what stain?", "answer": "h&e", "answer_type": "OPEN"})
        + "\n"
    )
    return root


def test_pathvqa(tmp_path):
    root = write_pathvqa(tmp_path / "pvqa")
    out = tmp_path / "out"
    result = convert("pathvqa", root, out, progress=False)
    samples = read_back(out)
    assert sorted(samples) == [
        "pathvqa-test-000000",
        "pathvqa-train-000000",
        "pathvqa-train-000001",
        "pathvqa-val-000000",
    ]
    assert samples["pathvqa-train-000000"].fields["answer_type"] == "closed"  # yes/no -> closed
    assert samples["pathvqa-train-000001"].fields["answer_type"] == "open"
    assert samples["pathvqa-val-000000"].fields == {
        "question": "are nuclei visible?",
        "answer": "No",
        "answer_type": "closed",
    }
    assert samples["pathvqa-test-000000"].extra["image"] == "test_0001"
    assert {s.modality for s in samples.values()} == {"SM"}
    assert [(s.item, s.kind) for s in result.skipped] == [("qas/train/train_qa.json row 2", "missing image")]
    assert_verifies(out)


class _Payload:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pathvqa_refuses_pickles_without_loading_them(tmp_path):
    root = write_pathvqa(tmp_path / "pvqa")
    (root / "qas" / "train" / "train_qa.json").unlink()
    marker = tmp_path / "pickle-was-loaded"
    (root / "qas" / "train" / "train_qa.pkl").write_bytes(pickle.dumps([_Payload(marker)]))
    with pytest.raises(PickleRefusedError, match=r"train_qa\.pkl: refusing to unpickle"):
        convert("pathvqa", root, tmp_path / "out", progress=False)
    assert not marker.exists()


def test_pathvqa_missing_table_names_expected_path(tmp_path):
    root = write_pathvqa(tmp_path / "pvqa")
    (root / "test.jsonl").unlink()
    with pytest.raises(LayoutError, match=r"qas/test/test_qa\.json: test question table not found"):
        convert("pathvqa", root, tmp_path / "out", progress=False)
