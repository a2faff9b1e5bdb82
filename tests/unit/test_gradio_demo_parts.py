"""The demo's parts without a browser: drawing, example selection, the API client's errors, the CLI's guards."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from biomedgpt.demo.client import ApiClient, ApiError, error_message
from biomedgpt.demo.drawing import BOX_COLOURS, MASK_COLOUR, draw_boxes, mask_area, overlay_mask
from biomedgpt.demo.examples import corpus_examples, load_examples
from biomedgpt.serve.types import SERVED_TASKS, TASK_FIELDS


def gray(width: int = 40, height: int = 30, value: int = 100) -> Image.Image:
    return Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8))


def test_overlay_tints_the_mask_only():
    mask = np.zeros((30, 40), dtype=bool)
    mask[10:20, 5:25] = True
    out = np.asarray(overlay_mask(gray(), mask, alpha=0.5))
    assert out.shape == (30, 40, 3)
    assert (out[~mask] == 100).all()  # outside untouched
    assert tuple(out[15, 15]) == tuple(round(0.5 * 100 + 0.5 * c) for c in MASK_COLOUR)  # inside blended
    assert tuple(out[10, 10]) == MASK_COLOUR  # the edge is solid


def test_overlay_refuses_a_mask_of_another_size():
    with pytest.raises(ValueError, match="does not match"):
        overlay_mask(gray(), np.zeros((40, 30), dtype=bool))


def test_mask_area_counts_pixels_and_share():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5, :5] = True
    assert mask_area(mask) == "25 px (25.0% of the image)"


def test_boxes_are_outlined_in_input_pixels():
    out = np.asarray(draw_boxes(gray(), [((30, 25, 10, 5), ""), ((0, 0, 3, 3), "x")]))  # corners in any order
    assert out.shape == (30, 40, 3)
    assert tuple(out[5, 20]) == BOX_COLOURS[0] and tuple(out[25, 10]) == BOX_COLOURS[0]
    assert tuple(out[15, 20]) == (100, 100, 100)  # inside stays clear


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"error": {"message": "task vqa needs the field question", "type": "invalid"}}',
            "needs the field question",
        ),
        (b'{"error": "unauthorized"}', "unauthorized"),
        (b'{"detail": [{"loc": ["body", "image"], "msg": "Field required"}]}', "Field required"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b"<html>bad gateway</html>", "bad gateway"),
    ],
)
def test_api_error_bodies_become_messages(raw, expected):
    message = error_message(raw, 422)
    assert message.startswith("HTTP 422: ") and expected in message


def test_an_unreachable_api_is_an_error_with_status_503():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket closes
    client = ApiClient(f"http://127.0.0.1:{port}", timeout=5)
    assert client.ready() is False
    with pytest.raises(ApiError) as err:
        client.models()
    assert err.value.status == 503 and "cannot be reached" in err.value.message


def test_the_api_address_needs_a_scheme():
    with pytest.raises(ValueError, match="http"):
        ApiClient("localhost:8000")


def test_without_a_corpus_every_task_gets_generated_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data_shards/demo here
    examples, source = load_examples(cache_dir=tmp_path / "cache")
    assert source == "generated images"
    assert set(examples) == set(SERVED_TASKS)
    for task, items in examples.items():
        assert items
        for example in items:
            assert example.image.is_file()
            assert (example.field is not None) == (task in TASK_FIELDS)


def test_corpus_examples_come_from_the_test_split(tmp_path):
    from biomedgpt.data.schema import Sample
    from biomedgpt.data.shards import write_dataset

    def sample(key, task, split, source, fields, mask=None):
        image = np.full((16, 16), 50, dtype=np.uint8)
        return Sample(key=key, task=task, split=split, image=image, fields=fields, mask=mask, source=source)

    lesion = np.zeros((16, 16), dtype=np.uint8)
    lesion[4:8, 4:8] = 255
    samples = [
        sample("q-a1", "vqa", "test", "a", {"question": "what modality is this?", "answer": "ct"}),
        sample("q-a2", "vqa", "test", "a", {"question": "is there a lesion?", "answer": "no"}),
        sample("q-b1", "vqa", "test", "b", {"question": "which organ?", "answer": "lung"}),
        sample("q-train", "vqa", "train", "c", {"question": "train only?", "answer": "yes"}),
        sample(
            "s-empty", "segmentation", "test", "a", {"target": "lesion"}, np.zeros((16, 16), dtype=np.uint8)
        ),
        sample("s-full", "segmentation", "test", "a", {"target": "lesion"}, lesion),
        sample("c-1", "caption", "test", "a", {"text": "an axial ct slice"}),
    ]
    write_dataset(samples, tmp_path / "shards", name="mini", progress=False)

    examples = corpus_examples([str(tmp_path / "shards")], tmp_path / "cache", per_task=2)
    assert [e.field for e in examples["vqa"]] == [
        "what modality is this?",
        "which organ?",
    ]  # one per source first
    assert [e.image.stem for e in examples["segmentation"]] == ["s-full"]  # empty reference masks are skipped
    assert examples["segmentation"][0].note == "a: mask of 16 px"

    filled, source = load_examples(str(tmp_path / "shards"), cache_dir=tmp_path / "cache")
    assert "shards" in source
    assert [e.image.stem for e in filled["report"]] == ["c-1"]  # fieldless tasks borrow corpus images
    assert filled["grounding"][0].image.stem == "generated-chest"  # nothing in the corpus: generated


def test_a_missing_examples_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_examples(str(tmp_path / "nowhere"), cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("192.168.1.4", False)],
)
def test_loopback_hosts(host, loopback):
    from biomedgpt.commands.demo import is_loopback

    assert is_loopback(host) is loopback


def test_demo_command_needs_a_model_or_an_api(capsys):
    from biomedgpt import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["demo"])
    assert exc.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_demo_command_reports_an_unreachable_api(capsys):
    from biomedgpt import cli

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli.main(["demo", "--api", f"http://127.0.0.1:{port}", "--wait", "0"]) == 2
    assert "cannot be reached" in capsys.readouterr().err


def test_tasks_are_read_from_the_model_list():
    from biomedgpt.demo.backends import served_tasks

    ids = ["org/model-v1", "org/model-v1:vqa", "org/model-v1:segmentation"]
    assert served_tasks(ids) == ("org/model-v1", ("vqa", "segmentation"))
    assert served_tasks(["bare"]) == ("bare", SERVED_TASKS)  # no per-task ids: assume every task


def test_uploads_go_through_the_api_decoder_and_limits(tmp_path):
    from biomedgpt.demo.app import UploadLimits, load_upload
    from biomedgpt.serve.config import ServeConfig
    from biomedgpt.serve.types import RequestError

    limits = UploadLimits.from_config()
    assert limits.image == ServeConfig().image_limits() and limits.max_bytes == ServeConfig().max_body_bytes
    path = tmp_path / "ramp16.png"
    Image.fromarray(np.linspace(0, 65535, 64 * 48).astype(np.uint16).reshape(48, 64)).save(path)
    image = load_upload(path, limits)
    assert image.mode == "RGB" and image.size == (64, 48)
    assert np.asarray(image).mean() == pytest.approx(127.5, abs=1)  # scaled, not clipped to white
    small = UploadLimits(max_bytes=path.stat().st_size - 1, image=limits.image)
    with pytest.raises(RequestError, match="bytes, more than the limit") as caught:
        load_upload(path, small)
    assert caught.value.status == 413
