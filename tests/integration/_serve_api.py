"""A real BiomedGPT API server on 127.0.0.1 for the serving tests, and what they share (not a test module)."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
from PIL import Image

from biomedgpt.serve.app import create_app
from biomedgpt.serve.config import ServeConfig
from biomedgpt.serve.engines import load_engine
from biomedgpt.serve.server import BackgroundServer
from tests.integration._demo_server import free_port

API_KEY = "test-key-0123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL_ID = "biomedgpt-test"  # tests/conftest.py write_served_model
TASKS = ["caption", "report", "vqa", "classification", "segmentation", "grounding", "detection"]
TASK_FIELDS = {
    "vqa": {"question": "is there an effusion"},
    "grounding": {"text": "left lung"},
    "segmentation": {"structure": "liver"},
}
BODY_LIMIT = 512 * 1024


def png_bytes(width: int = 48, height: int = 40, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A real, tiny PNG whose header declares width x height RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


PNG = png_bytes()
PNG_B64 = base64.b64encode(PNG).decode()
DATA_URL = "data:image/png;base64," + PNG_B64


def chat_kwargs(content, **extra) -> dict:
    """Request kwargs of a chat completion with one user message."""
    return {"json": {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], **extra}}


def image_part(url: str = DATA_URL) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


@contextmanager
def running_api(model_dir, **overrides) -> Iterator[BackgroundServer]:
    """The API over the torch engine on `model_dir`, with a key, a small body limit and a 30 ms batching window;
    `overrides` replace any `ServeConfig` field (`api_key=None` serves without a key)."""
    settings = {
        "api_key": API_KEY,
        "max_new_tokens": 300,  # segmentation's default budget at 64 px is 257
        "max_batch_size": 8,
        "max_wait_ms": 30,
        "max_body_bytes": BODY_LIMIT,
        "log_level": "warning",
        **overrides,
    }
    config = ServeConfig(model=model_dir, engine="torch", port=free_port(), **settings)
    engine = load_engine(model_dir, engine="torch", limits=config.engine_limits())
    with BackgroundServer(create_app(engine, config), config) as running:
        yield running


def wait_ready(url: str, process, *, timeout: float, interval: float = 0.2) -> bool:
    """Poll `url`/ready until it answers 200 (True), or `process` exits or `timeout` s pass (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    return False


def assert_json_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["message"]
    return error
