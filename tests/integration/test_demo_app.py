"""The Gradio demo, launched for real on 127.0.0.1 over the torch engine, called task by task with gradio_client.

Outputs must be well-formed whatever the random tiny model says: closed-set answers come from the answer list,
drawn images keep the input's size, boxes are four numbers, and refused requests come back as a message in the
tab's status line instead of an error.
"""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from tests.integration._demo_server import running_demo

pytestmark = pytest.mark.integration

ANSWERS = {"vqa": ["yes", "no", "left lung"], "classification": ["normal", "pneumonia", "effusion"]}
"""The answer lists `write_served_model` (tests/conftest.py) puts in answers.json."""


@pytest.fixture(scope="module")
def engine(served_model_dir):
    from biomedgpt.serve.engines import load_engine

    return load_engine(served_model_dir, engine="torch")


@pytest.fixture(scope="module")
def demo_client(engine, tmp_path_factory):
    from gradio_client import Client

    from biomedgpt.demo.backends import EngineBackend

    with running_demo(EngineBackend(engine), tmp_path_factory.mktemp("demo-examples")) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    """A non-square image, so a width/height swap anywhere shows up as a size mismatch."""
    from biomedgpt.demo.examples import draw_chest_slice

    path = tmp_path_factory.mktemp("demo-input") / "chest.png"
    Image.fromarray(draw_chest_slice(256)[:, 30:230]).save(path)  # 200 x 256
    return path


def call(client, task: str, image_path, *fields: str):
    from gradio_client import handle_file

    return client.predict(handle_file(str(image_path)), *fields, api_name=f"/{task}")


def test_one_endpoint_per_task(demo_client, engine):
    endpoints = demo_client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {f"/{task}" for task in engine.tasks} <= set(endpoints)


@pytest.mark.parametrize("task", ["caption", "report"])
def test_text_tasks_answer(demo_client, image_path, task):
    text, status = call(demo_client, task, image_path)
    assert isinstance(text, str) and text.strip()
    assert status.startswith("Done in")


@pytest.mark.parametrize(("task", "fields"), [("vqa", ["is there a lesion?"]), ("classification", [])])
def test_closed_set_tasks_answer_from_the_list(demo_client, image_path, task, fields):
    answer, score, status = call(demo_client, task, image_path, *fields)
    assert answer in ANSWERS[task]
    assert 0.0 <= score <= 1.0
    assert status.startswith("Done in")


def test_a_caption_streams_into_the_page(demo_client, image_path):
    """gradio_client's `submit` sees every update: the caption growing token by token, then its end."""
    from gradio_client import handle_file

    job = demo_client.submit(handle_file(str(image_path)), api_name="/caption")
    final_text, final_status = job.result(timeout=120)
    updates = job.outputs()
    partial = [(text, status) for text, status in updates if status.startswith("Generating")]
    assert len(partial) >= 2, updates  # more than one intermediate answer reached the client
    assert all(text for text, _ in partial)
    assert partial[-1][0] == final_text and final_status.startswith("Done in")
    assert tuple(updates[-1]) == (final_text, final_status)


@pytest.mark.parametrize(("task", "fields"), [("caption", {}), ("vqa", {"question": "is there a lesion?"})])
def test_the_engine_backend_streams_the_decoded_text(engine, image_path, task, fields):
    """Straight from the backend: the text of the tokens so far after each step, then the whole output, the
    same as an unstreamed run gives."""
    from biomedgpt.demo.backends import EngineBackend

    backend = EngineBackend(engine)
    try:
        with Image.open(image_path) as image:
            image = image.convert("RGB")
        updates = list(backend.stream(task, image, fields))
        whole = backend.run(task, image, fields)
    finally:
        backend.close()
    *partial, (final_text, output) = updates
    assert partial and all(out is None for _, out in partial)
    assert output == whole and final_text == whole["text"]
    assert partial[-1][0] == final_text  # the last step's decoded text is the answer
    if task == "caption":
        assert len({text for text, _ in partial}) >= 2  # it grew while decoding
    else:
        assert output["answer"] in ANSWERS[task] and 0.0 <= output["score"] <= 1.0


def test_segmentation_overlay_keeps_the_input_size(demo_client, image_path):
    overlay, area, status = call(demo_client, "segmentation", image_path, "lesion")
    with Image.open(overlay) as drawn, Image.open(image_path) as source:
        assert drawn.size == source.size == (200, 256)
    assert re.fullmatch(r"\d+ px \(\d+\.\d% of the image\)", area)
    assert status.startswith("Done in")


def test_grounding_draws_a_box(demo_client, image_path):
    drawn, box, status = call(demo_client, "grounding", image_path, "the lesion")
    with Image.open(drawn) as image:
        assert image.size == (200, 256)
    if not box.startswith("no box"):
        coords = json.loads(box)
        assert len(coords) == 4 and all(0 <= v <= 256 for v in coords)
    assert status.startswith("Done in")


def test_detection_draws_objects(demo_client, image_path):
    drawn, objects, status = call(demo_client, "detection", image_path)
    with Image.open(drawn) as image:
        assert image.size == (200, 256)
    assert isinstance(objects, list)
    for obj in objects:
        assert len(obj["box"]) == 4 and isinstance(obj["label"], str)
    assert status.startswith("Done in")


def test_a_missing_field_is_a_message_not_an_error(demo_client, image_path):
    answer, score, status = call(demo_client, "vqa", image_path, "   ")
    assert answer is None and score is None
    assert status.startswith("**Error:**") and "question" in status


def test_an_engine_refusal_is_shown_with_its_status(demo_client, image_path):
    # 300 words make more prompt tokens than the engine's limit: a RequestError (422) inside the engine.
    drawn, area, status = call(demo_client, "segmentation", image_path, "lesion " * 300)
    assert drawn is None and area is None
    assert "refused (422)" in status and "prompt" in status


# ----------------------------------------------------------------------------- uploads the API would refuse


def _refused_uploads(folder):
    """name -> path of uploads the demo must refuse with a message in the page (issue 16)."""
    from tests._upload_samples import accepted_samples, refused_samples
    from tests.integration._serve_api import bomb_png

    png = accepted_samples()["PNG"]
    files = {
        "corrupt.png": png[:60] + b"\x00garbage" * 8,
        "truncated.png": png[: len(png) // 2],
        "huge.png": bomb_png(30000, 30000),  # a real header declaring 900 megapixels
        "81mp.png": bomb_png(9000, 9000),  # refused from its header: decoding it would fail differently
        "report.pdf": refused_samples()["PDF"],
        "image.qoi": refused_samples()["truncated QOI"],
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("corrupt.png", 422, "PNG image could not be decoded"),
        ("truncated.png", 422, "PNG image could not be decoded"),
        ("huge.png", 413, "900,000,000 pixels"),
        ("81mp.png", 413, "81,000,000 pixels"),
        ("report.pdf", 422, "PDF is not an accepted format"),
        ("image.qoi", 422, "QOI is not an accepted format"),
    ],
)
def test_a_bad_upload_is_a_message_in_the_page(demo_client, tmp_path, name, status, words):
    path = _refused_uploads(tmp_path)[name]
    answer, score, message = call(demo_client, "vqa", path, "is there a lesion?")
    assert answer is None and score is None
    assert message.startswith(f"**Error:** The image was refused ({status})") and words in message


def test_a_16_bit_and_a_dicom_upload_are_answered(demo_client, tmp_path):
    import numpy as np

    from tests._upload_samples import dicom_path

    path = tmp_path / "ramp16.png"
    Image.fromarray(np.linspace(0, 65535, 64 * 48).astype(np.uint16).reshape(48, 64)).save(path)
    for upload in (path, dicom_path()):
        answer, _score, status = call(demo_client, "vqa", upload, "is there a lesion?")
        assert answer in ANSWERS["vqa"] and status.startswith("Done in")
