"""The demo over the HTTP API: a real uvicorn server (`biomedgpt.serve.app.create_app`, torch engine, an API key)
on 127.0.0.1, the demo's `ApiBackend` talking to it, and gradio_client calling the demo.

Checks what only this path has: the key is sent, masks survive the trip as PNG, the task list comes from
`/v1/models`, and the API's refusals (4xx JSON errors) reach the user as the demo's status message.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.integration._demo_server import free_port, running_demo

pytestmark = pytest.mark.integration

API_KEY = "demo-test-key"


@pytest.fixture(scope="module")
def api_url(served_model_dir):
    from biomedgpt.serve.app import create_app
    from biomedgpt.serve.config import ServeConfig
    from biomedgpt.serve.engines import load_engine
    from biomedgpt.serve.server import BackgroundServer

    config = ServeConfig(host="127.0.0.1", port=free_port(), api_key=API_KEY, log_level="warning")
    app = create_app(load_engine(served_model_dir, engine="torch"), config)
    with BackgroundServer(app, config) as server:
        yield server.url


@pytest.fixture(scope="module")
def backend(api_url):
    from biomedgpt.demo.backends import load_backend

    return load_backend(api=api_url, api_key=API_KEY, wait_s=10)


@pytest.fixture(scope="module")
def demo_client(backend, tmp_path_factory):
    from gradio_client import Client

    with running_demo(backend, tmp_path_factory.mktemp("demo-examples")) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    from biomedgpt.demo.examples import draw_nuclei

    path = tmp_path_factory.mktemp("demo-input") / "nuclei.png"
    Image.fromarray(draw_nuclei(192)[:, :150]).save(path)  # 150 x 192
    return path


def call(client, task: str, image_path, *fields: str):
    from gradio_client import handle_file

    return client.predict(handle_file(str(image_path)), *fields, api_name=f"/{task}")


def test_tasks_and_model_come_from_the_api(backend):
    assert backend.model_id == "biomedgpt-test"
    assert backend.tasks == (
        "caption",
        "report",
        "vqa",
        "classification",
        "segmentation",
        "grounding",
        "detection",
    )


def test_a_wrong_key_is_refused(api_url):
    from biomedgpt.demo.backends import load_backend
    from biomedgpt.demo.client import ApiError

    with pytest.raises(ApiError) as err:
        load_backend(api=api_url, api_key="wrong")
    assert err.value.status == 401


def test_vqa_through_the_api(demo_client, image_path):
    answer, score, status = call(demo_client, "vqa", image_path, "what modality is this?")
    assert answer in {"yes", "no", "left lung"}
    assert 0.0 <= score <= 1.0 and status.startswith("Done in")


def test_the_mask_crosses_the_api_as_png(demo_client, image_path, backend):
    overlay, area, status = call(demo_client, "segmentation", image_path, "nuclei")
    with Image.open(overlay) as drawn:
        assert drawn.size == (150, 192)
    assert status.startswith("Done in")
    with Image.open(image_path) as image:
        mask = backend.run("segmentation", image.convert("RGB"), {"structure": "nuclei"})["mask"]
    assert mask.shape == (192, 150) and mask.dtype == bool
    assert area.startswith(f"{int(mask.sum())} px")


def test_grounding_through_the_api(demo_client, image_path):
    drawn, box, status = call(demo_client, "grounding", image_path, "the largest nucleus")
    with Image.open(drawn) as image:
        assert image.size == (150, 192)
    assert box.startswith("no box") or len(json.loads(box)) == 4
    assert status.startswith("Done in")


def test_a_caption_streams_through_the_api(backend, image_path):
    """Captions come over /v1/chat/completions with `stream: true`: the text grows chunk by chunk, then ends."""
    assert "caption" in backend.streamed
    with Image.open(image_path) as image:
        updates = list(backend.stream("caption", image.convert("RGB"), {}))
    *partial, (text, output) = updates
    assert len(partial) >= 2 and all(out is None for _, out in partial), updates
    assert partial[-1][0] == text == output["text"] and text


def test_an_api_refusal_is_shown_as_a_message(demo_client, image_path):
    # Too many prompt tokens: the server answers 422 with its JSON error; the demo shows its message.
    answer, score, status = call(demo_client, "vqa", image_path, "why " * 300)
    assert answer is None and score is None
    assert "refused (422)" in status and "HTTP 422" in status and "prompt" in status
