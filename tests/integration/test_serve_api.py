"""The HTTP API end to end: a real uvicorn server on 127.0.0.1 over the torch engine and a tiny random model.

Covers every task endpoint (JSON and multipart), the OpenAI-compatible routes through the official `openai`
client, probes and metrics, the API key on every /v1 route, dynamic batching under concurrency, readiness while
a model loads, and the `biomedgpt serve` command. Hostile input and fuzzing: test_serve_api_robustness.py.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from biomedgpt.eval.rle import rle_to_mask
from biomedgpt.serve.app import create_app
from biomedgpt.serve.config import ServeConfig
from biomedgpt.serve.engines import load_engine
from biomedgpt.serve.server import BackgroundServer
from biomedgpt.serve.torch_engine import TorchEngine
from tests.integration._demo_server import free_port
from tests.integration._serve_api import (
    API_KEY,
    AUTH,
    DATA_URL,
    MODEL_ID,
    PNG_B64,
    TASK_FIELDS,
    TASKS,
    assert_json_error,
    png_bytes,
    running_api,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(served_model_dir):
    with running_api(served_model_dir) as running:
        yield running


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def metric(text: str, sample_name: str, **labels: str) -> float:
    """Sum of the samples called `sample_name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# ----------------------------------------------------------------------------- the happy paths


def test_probes_answer_without_a_key(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/ready")
    assert (
        ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["model"] == MODEL_ID
    )
    # /metrics needs the key when one is set (test_serve_hardening.py covers what else does).
    assert httpx.get(f"{server.url}/metrics").status_code == 401


def check_output(task: str, body: dict, *, size=(48, 40)) -> None:
    assert body["task"] == task and body["model"] == MODEL_ID and body["prompt"].startswith(" ")
    assert body["usage"]["prompt_tokens"] > 2 and body["usage"]["completion_tokens"] >= 1
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"] > 0
    output = body["output"]
    if task in ("caption", "report"):
        assert isinstance(output["text"], str)
    elif task == "vqa":
        assert output["answer"] in ("yes", "no", "left lung")  # closed set: the answer trie
    elif task == "classification":
        assert output["label"] in ("normal", "pneumonia", "effusion")
    elif task == "grounding":
        box = output["box"]
        assert box is None or (len(box) == 4 and all(0 <= v <= max(size) for v in box))
    elif task == "detection":
        assert all(len(o["box"]) == 4 and isinstance(o["label"], str) for o in output["objects"])
    elif task == "segmentation":
        mask = output["mask"]
        assert mask["size"] == [size[1], size[0]]


@pytest.mark.parametrize("task", TASKS)
def test_task_endpoint_json(api, task):
    response = api.post(
        f"/v1/tasks/{task}", json={"image": PNG_B64, "max_new_tokens": 8, **TASK_FIELDS.get(task, {})}
    )
    assert response.status_code == 200, response.text
    check_output(task, response.json())


@pytest.mark.parametrize("task", TASKS)
def test_task_endpoint_multipart(api, task):
    image = png_bytes(30, 50, seed=1)
    fields = {"max_new_tokens": "6", **TASK_FIELDS.get(task, {})}
    response = api.post(f"/v1/tasks/{task}", files={"image": ("scan.png", image, "image/png")}, data=fields)
    assert response.status_code == 200, response.text
    check_output(task, response.json(), size=(30, 50))


def test_segmentation_mask_as_png_and_rle_agree(api):
    body = {"image": DATA_URL, "structure": "liver", "mask_format": "both"}  # default budget: a full mask
    mask = api.post("/v1/tasks/segmentation", json=body).json()["output"]["mask"]
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["png"])))) > 127
    assert png.shape == (40, 48) and mask["size"] == [40, 48]
    assert np.array_equal(png, rle_to_mask(mask["rle"])) and int(png.sum()) == mask["area"]


def test_own_prompt_replaces_the_template(api):
    body = api.post(
        "/v1/tasks/caption", json={"image": PNG_B64, "prompt": "describe the  lungs", "max_new_tokens": 4}
    ).json()
    assert body["prompt"] == " describe the lungs"


def test_chat_completions_through_the_openai_client(client):
    def ask(model: str, text: str, **extra):
        content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": DATA_URL}}]
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], **extra
        )

    vqa = ask(f"{MODEL_ID}:vqa", "is there an effusion", max_tokens=6)
    assert vqa.object == "chat.completion" and vqa.model == f"{MODEL_ID}:vqa"
    choice = vqa.choices[0]
    assert choice.message.role == "assistant" and choice.message.content in ("yes", "no", "left lung")
    assert choice.finish_reason in ("stop", "length")
    assert vqa.usage.total_tokens == vqa.usage.prompt_tokens + vqa.usage.completion_tokens
    extra = vqa.to_dict()["biomedgpt"]
    assert extra["task"] == "vqa" and extra["prompt"] == " is there an effusion?"

    free = ask(MODEL_ID, "describe the findings", max_completion_tokens=5)
    assert free.to_dict()["biomedgpt"]["prompt"] == " describe the findings"
    assert free.usage.completion_tokens <= 5 and isinstance(free.choices[0].message.content, str)

    grounding = ask(MODEL_ID, "left lung", max_tokens=8, extra_body={"task": "grounding"})
    assert "box" in json.loads(grounding.choices[0].message.content)
    seg = ask(f"{MODEL_ID}:segmentation", "liver")
    assert json.loads(seg.choices[0].message.content)["mask"]["size"] == [40, 48]


def test_chat_errors_reach_the_client_as_openai_errors(client):
    def ask(url: str, **extra):
        content = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}]
        return client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": content}], **extra
        )

    with pytest.raises(openai.UnprocessableEntityError, match="remote images are not fetched"):
        ask("https://example.org/scan.png")
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        ask(DATA_URL, max_tokens=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()


def test_models_through_the_openai_client(client):
    ids = [model.id for model in client.models.list()]
    assert ids == [MODEL_ID, *(f"{MODEL_ID}:{task}" for task in TASKS)]
    assert client.models.retrieve(f"{MODEL_ID}:vqa").id == f"{MODEL_ID}:vqa"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


# ----------------------------------------------------------------------------- keys, metrics, batching

V1_ROUTES = [
    ("GET", "/v1/models", {}),
    ("GET", "/v1/models/x", {}),
    ("POST", "/v1/tasks/caption", {"json": {"image": PNG_B64}}),
    ("POST", "/v1/chat/completions", {"json": {"model": MODEL_ID, "messages": []}}),
    ("GET", "/v1/no-such-route", {}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), V1_ROUTES, ids=[f"{m} {p}" for m, p, _ in V1_ROUTES])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"x-api-key": "wrong"},
        {"Authorization": API_KEY},
        {"Authorization": "Basic dGVzdDp0ZXN0"},
    ],
    ids=["missing", "wrong-bearer", "wrong-x-api-key", "no-scheme", "basic"],
)
def test_every_v1_route_needs_the_key(server, method, path, kwargs, headers):
    response = httpx.request(method, f"{server.url}{path}", headers=headers, **kwargs)
    error = assert_json_error(response, 401)
    assert error["type"] == "authentication_error" and response.headers["www-authenticate"] == "Bearer"


def test_the_key_works_as_x_api_key(server):
    assert httpx.get(f"{server.url}/v1/models", headers={"x-api-key": API_KEY}).status_code == 200


def test_metrics_count_requests_tokens_and_errors(api, server):
    api.post("/v1/tasks/caption", json={"image": PNG_B64, "max_new_tokens": 3})
    api.post("/v1/tasks/caption", content=b"{", headers={"content-type": "application/json"})
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    assert metric(text, "biomedgpt_requests_total", route="/v1/tasks/{task}", status="200") >= 1
    assert metric(text, "biomedgpt_requests_total", route="/v1/tasks/{task}", status="400") >= 1
    assert metric(text, "biomedgpt_request_errors_total", code="invalid_json") >= 1
    assert metric(text, "biomedgpt_generated_tokens_total", task="caption") >= 1
    assert metric(text, "biomedgpt_prompt_tokens_total", task="caption") >= 1
    assert metric(text, "biomedgpt_request_latency_seconds_count", route="/v1/tasks/{task}") >= 2
    assert metric(text, "biomedgpt_batch_size_count") >= 1
    assert "biomedgpt_queue_size" in text and metric(text, "biomedgpt_model_ready") == 1
    # Unknown paths share one label: scanners cannot grow the label set.
    httpx.get(f"{server.url}/random/{time.time()}")
    assert 'route="other"' in httpx.get(f"{server.url}/metrics", headers=AUTH).text


def test_concurrent_requests_are_batched(api, server):
    before = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    start = threading.Barrier(16)

    def one(i: int) -> int:
        start.wait()
        body = {"image": base64.b64encode(png_bytes(seed=i)).decode(), "max_new_tokens": 4}
        return api.post("/v1/tasks/caption", json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(16)))
    after = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    assert statuses == [200] * 16

    def multi(text: str) -> float:  # batches of more than one request
        return metric(text, "biomedgpt_batch_size_count") - metric(
            text, "biomedgpt_batch_size_bucket", le="1.0"
        )

    assert multi(after) - multi(before) >= 1
    batches = metric(after, "biomedgpt_batch_size_count") - metric(before, "biomedgpt_batch_size_count")
    assert batches < 16


# ----------------------------------------------------------------------------- startup: readiness and the CLI


def test_ready_is_503_until_the_model_is_loaded(served_model_dir):
    config = ServeConfig(model=served_model_dir, engine="torch", port=free_port(), log_level="warning")
    release = threading.Event()

    def load():  # the real engine, loaded once the test has seen the server answer without it
        release.wait(30)
        return load_engine(served_model_dir, engine="torch", limits=config.engine_limits())

    with BackgroundServer(create_app(None, config, loader=load), config) as running:
        assert httpx.get(f"{running.url}/health").json() == {"status": "ok"}
        loading = httpx.get(f"{running.url}/ready")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        busy = httpx.post(f"{running.url}/v1/tasks/caption", json={"image": PNG_B64})
        assert assert_json_error(busy, 503)["code"] == "model_loading" and busy.headers["retry-after"]
        release.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{running.url}/ready").status_code != 200:
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.05)
        response = httpx.post(f"{running.url}/v1/tasks/caption", json={"image": PNG_B64, "max_new_tokens": 2})
        assert response.status_code == 200, response.text


def test_biomedgpt_serve_command_runs_a_server(served_model_dir):
    port = free_port()
    env = {**os.environ, "BIOMEDGPT_API_KEY": API_KEY, "BIOMEDGPT_SERVE_MAX_NEW_TOKENS": "300"}
    command = [
        sys.executable,
        "-m",
        "biomedgpt.cli",
        "serve",
        "--model",
        str(served_model_dir),
        "--engine",
        "torch",
    ]
    process = subprocess.Popen(
        [*command, "--port", str(port), "log_level=warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert (
            process.stdout.readline().strip()
            == f"serving on http://127.0.0.1:{port} (OpenAI base_url http://127.0.0.1:{port}/v1)"
        )
        deadline = time.monotonic() + 180  # a busy machine (parallel test workers) slows the model load
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                process.stderr.read() if process.poll() else "timeout"
            )
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0)
        assert client.models.list().data[0].id == MODEL_ID
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0, process.stderr.read()


class GatedEngine(TorchEngine):
    """The real torch engine, with a gate before each batch and a failure on one prompt: lets a test hold the
    engine busy (queue overflow, timeouts) and make one batch fail, deterministically."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def run(self, items):  # the request-level batcher's call
        self.entered.set()
        assert self.gate.wait(30)
        if any("explode" in item.prompt for item in items):
            raise RuntimeError("simulated engine failure")
        return super().run(items)

    def step_model(self):  # the continuous batcher's: the gate and the failure sit in the encoder call
        engine, inner = self, super().step_model()
        explode = self.tokenizer.encode_prompt(" explode now")[1:-1]

        class Gated:
            def __getattr__(self, name):
                return getattr(inner, name)

            def encode(self, input_ids, attention_mask, pixels, patch_masks):
                engine.entered.set()
                assert engine.gate.wait(30)
                if any(row[1 : 1 + len(explode)].tolist() == explode for row in input_ids):
                    raise RuntimeError("simulated engine failure")
                return inner.encode(input_ids, attention_mask, pixels, patch_masks)

        return Gated()


@pytest.mark.parametrize("batching", ["continuous", "request"])
def test_queue_overflow_timeouts_and_engine_failures_are_survived(served_model_dir, batching):
    config = ServeConfig(
        port=free_port(),
        batching=batching,
        max_running=1,
        max_beams=1,
        max_batch_size=1,
        max_wait_ms=0,
        max_queue=1,
        request_timeout_s=3,
        log_level="critical",
    )
    engine = GatedEngine(served_model_dir, limits=config.engine_limits())
    body = {"image": PNG_B64, "max_new_tokens": 2}
    with BackgroundServer(create_app(engine, config), config) as running, ThreadPoolExecutor(2) as pool:

        def post(extra: dict | None = None) -> httpx.Response:
            return httpx.post(f"{running.url}/v1/tasks/caption", json={**body, **(extra or {})}, timeout=30)

        engine.gate.clear()
        engine.entered.clear()
        first = pool.submit(post)  # taken by the worker, held at the gate
        assert engine.entered.wait(10)
        second = pool.submit(post)  # waits in the queue (max_queue=1)
        deadline = time.monotonic() + 10
        while metric(httpx.get(f"{running.url}/metrics").text, "biomedgpt_queue_size") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        full = post()
        assert assert_json_error(full, 503)["code"] == "queue_full" and full.headers["retry-after"] == "1"
        engine.gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200

        engine.gate.clear()
        slow = post()  # held past request_timeout_s
        assert assert_json_error(slow, 504)["code"] == "timeout"
        engine.gate.set()

        failed = post({"prompt": "explode now"})
        assert assert_json_error(failed, 500)["code"] == "inference_failed"
        assert "simulated" not in failed.text  # internals stay in the log
        assert httpx.get(f"{running.url}/health").status_code == 200
        assert post().status_code == 200
