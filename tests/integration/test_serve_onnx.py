"""`biomedgpt serve` on an ONNX export, in a process where torch cannot be imported: what the API container runs.

A real uvicorn server (the CLI in a subprocess) on 127.0.0.1, driven by the official `openai` client and plain
HTTP: chat with a base64 image, a task endpoint with a mask, /ready naming the ONNX Runtime engine, /metrics.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration._demo_server import free_port
from tests.integration._serve_api import wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "onnx-test-key"
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
    "from biomedgpt.cli import main; sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def onnx_server(exported_model_dir):
    port = free_port()
    env = {**os.environ, "BIOMEDGPT_API_KEY": KEY, "BIOMEDGPT_SERVE_MAX_NEW_TOKENS": "300"}
    command = [
        sys.executable,
        "-c",
        NO_TORCH,
        "serve",
        "--model",
        str(exported_model_dir),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    if not wait_ready(url, process, timeout=60):
        process.kill()
        pytest.fail(f"the ONNX server did not become ready:\n{process.communicate()[0]}")
    yield url
    process.terminate()
    process.wait(timeout=20)


def _png(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype("uint8")).save(buffer, format="PNG")
    return buffer.getvalue()


def test_ready_names_the_onnx_engine(onnx_server):
    ready = httpx.get(f"{onnx_server}/ready").json()
    assert ready["engine"] == "onnxruntime"


def test_openai_client_gets_a_closed_set_answer(onnx_server, exported_model_dir):
    import json

    import openai

    client = openai.OpenAI(base_url=f"{onnx_server}/v1", api_key=KEY, max_retries=0)
    model = next(m.id for m in client.models.list().data if m.id.endswith(":vqa"))
    url = "data:image/png;base64," + base64.b64encode(_png()).decode()
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "is there an effusion?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        max_tokens=8,
    )
    answers = json.loads((exported_model_dir / "answers.json").read_text())["vqa"]
    assert completion.choices[0].message.content in answers
    assert completion.usage.completion_tokens >= 1


def test_segmentation_mask_comes_back_as_png_at_the_input_size(onnx_server):
    response = httpx.post(
        f"{onnx_server}/v1/tasks/segmentation",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "image": base64.b64encode(_png(1)).decode(),
            "structure": "lung",
            "max_new_tokens": 40,
            "mask_format": "png",
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    mask = response.json()["output"]["mask"]
    assert Image.open(io.BytesIO(base64.b64decode(mask["png"]))).size == (80, 60)


def test_metrics_count_generated_tokens(onnx_server):
    import re

    text = httpx.get(f"{onnx_server}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    counts = re.findall(r'^biomedgpt_generated_tokens_total\{task="(\w+)"\} ([0-9.]+)$', text, re.M)
    assert counts and all(float(n) >= 1 for _, n in counts)
    assert re.search(r"^biomedgpt_model_ready 1\.0$", text, re.M)
