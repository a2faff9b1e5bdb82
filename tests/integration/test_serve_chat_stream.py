"""The whole chat surface on a live server: streaming (SSE chunks), text-only and multi-turn chats, the
`max_tokens` clamp, sampling and seeds, `n` choices and the refused OpenAI parameters.

Real uvicorn servers on 127.0.0.1 over the torch engine (continuous batching, and request-level batching), and
over ONNX Runtime on a real export; clients are the official `openai` package and plain HTTP. A client that
disconnects mid-stream must free its rows in the scheduler.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest

from biomedgpt.serve.app import create_app
from biomedgpt.serve.config import ServeConfig
from biomedgpt.serve.engines import load_engine
from biomedgpt.serve.server import BackgroundServer
from tests.conftest import write_served_model
from tests.integration._demo_server import free_port
from tests.integration._serve_api import (
    API_KEY,
    AUTH,
    MODEL_ID,
    assert_json_error,
    image_part,
    png_bytes,
    running_api,
)
from tests.integration.test_serve_api import metric

pytestmark = pytest.mark.integration

ANSWERS = {"yes", "no", "left lung"}  # tests/conftest.py write_served_model: the vqa answers
LONG_BUDGET = 128  # the server cap of the model that never ends its answers


@contextmanager
def serving(model_dir, *, engine: str = "torch", **overrides) -> Iterator[tuple[BackgroundServer, object]]:
    """A live API over `model_dir`, and its app (whose `state.serve.batcher` the disconnect test watches)."""
    settings = {"api_key": API_KEY, "max_new_tokens": 300, "log_level": "warning", **overrides}
    config = ServeConfig(model=model_dir, engine=engine, port=free_port(), **settings)
    app = create_app(load_engine(model_dir, engine=engine, limits=config.engine_limits()), config)
    with BackgroundServer(app, config) as running:
        yield running, app


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


@pytest.fixture(scope="module")
def endless_model_dir(tmp_path_factory):
    """The test model with its end-of-sentence embedding zeroed: greedy answers run to the budget."""
    import torch

    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    directory = write_served_model(tmp_path_factory.mktemp("endless-model"))
    model = BiomedGPTForConditionalGeneration.from_pretrained(directory)
    with torch.no_grad():
        model.model.shared.weight[model.config.eos_token_id] = 0.0
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def endless(endless_model_dir):
    with serving(endless_model_dir, max_new_tokens=LONG_BUDGET) as running:
        yield running


def user(content, **extra) -> dict:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], **extra}


def events(response: httpx.Response) -> list:
    """The parsed `data:` payloads of an SSE response ("[DONE]" kept as the string)."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    out = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def stream(api: httpx.Client, body: dict) -> tuple[httpx.Response, list]:
    with api.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        return response, events(response)


def streamed_text(chunks: list, index: int = 0) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if isinstance(c, dict) and c["choices"] and c["choices"][0]["index"] == index
    )


def finish_reasons(chunks: list) -> dict[int, str]:
    return {
        c["choices"][0]["index"]: c["choices"][0]["finish_reason"]
        for c in chunks
        if isinstance(c, dict) and c["choices"] and c["choices"][0]["finish_reason"]
    }


# ----------------------------------------------------------------------------- streaming


def test_a_stream_through_the_openai_client_matches_the_whole_answer(client):
    messages = [{"role": "user", "content": "describe the findings"}]
    whole = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=24)
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=messages,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert all(
        c.id.startswith("chatcmpl-") and c.system_fingerprint == whole.system_fingerprint for c in chunks
    )
    content = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(content) >= 2  # token by token, not the answer at once
    assert "".join(content) == whole.choices[0].message.content
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])


def test_the_wire_format_is_role_content_finish_usage_done(api):
    response, chunks = stream(api, user("describe the findings", max_tokens=12))
    assert response.status_code == 200 and response.headers["x-biomedgpt-max-tokens"] == "12"
    assert response.headers["cache-control"] == "no-cache"
    assert chunks[-1] == "[DONE]"
    first, *middle, last = chunks[:-1]
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert middle and all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["biomedgpt"]["task"] == "caption" and last["biomedgpt"]["max_tokens"] == 12
    assert "usage" not in first  # only with stream_options.include_usage


def test_image_tasks_stream_and_structured_outputs_come_as_one_delta(api):
    vqa = user([{"type": "text", "text": "is there an effusion"}, image_part()], max_tokens=6)
    vqa["model"] = f"{MODEL_ID}:vqa"
    whole = api.post("/v1/chat/completions", json=vqa).json()
    _, chunks = stream(api, vqa)
    assert (
        streamed_text(chunks) == whole["choices"][0]["message"]["content"]
        and streamed_text(chunks) in ANSWERS
    )

    grounding = {
        **user([{"type": "text", "text": "left lung"}, image_part()], max_tokens=8),
        "task": "grounding",
    }
    whole = api.post("/v1/chat/completions", json=grounding).json()
    _, chunks = stream(api, grounding)
    deltas = [
        c for c in chunks if isinstance(c, dict) and c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert len(deltas) == 1 and "box" in json.loads(streamed_text(chunks))
    assert streamed_text(chunks) == whole["choices"][0]["message"]["content"]


def test_a_stop_string_ends_the_stream_where_the_whole_answer_is_cut(api):
    body = user("describe the findings", max_tokens=24)
    whole = api.post("/v1/chat/completions", json=body).json()
    text = whole["choices"][0]["message"]["content"]
    assert len(text) >= 6, text
    stop = text[3:5]
    cut = api.post("/v1/chat/completions", json={**body, "stop": stop}).json()
    _, chunks = stream(api, {**body, "stop": stop, "stream_options": {"include_usage": True}})
    assert streamed_text(chunks) == cut["choices"][0]["message"]["content"] == text[: text.find(stop)]
    assert finish_reasons(chunks) == {0: "stop"}
    # the stream stopped decoding there; the non-streamed answer decoded to its end
    assert chunks[-2]["usage"]["completion_tokens"] <= whole["usage"]["completion_tokens"]


def test_errors_before_the_stream_starts_are_json(api):
    for body, status, param in [
        (user("hi", max_tokens=0), 422, "max_tokens"),
        ({**user("hi"), "model": "gpt-4o"}, 404, "model"),
        (user("hi", tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
        ({**user("left lung"), "model": f"{MODEL_ID}:grounding"}, 422, "messages"),
    ]:
        response, _ = stream(api, body)
        assert assert_json_error(response, status)["param"] == param


def test_request_level_batching_streams_the_answer_as_one_delta(served_model_dir):
    with (
        running_api(served_model_dir, batching="request") as running,
        httpx.Client(base_url=running.url, headers=AUTH, timeout=60) as api,
    ):
        body = user([{"type": "text", "text": "describe the findings"}, image_part()], max_tokens=16)
        whole = api.post("/v1/chat/completions", json=body).json()
        _, chunks = stream(api, {**body, "stream_options": {"include_usage": True}})
        deltas = [c for c in chunks[1:] if isinstance(c, dict) and c["choices"] and c["choices"][0]["delta"]]
        assert [d["choices"][0]["delta"] for d in deltas] == [
            {"content": whole["choices"][0]["message"]["content"]}
        ]
        assert chunks[-2]["usage"] == whole["usage"] and chunks[-1] == "[DONE]"


def test_a_client_that_disconnects_mid_stream_frees_its_rows(endless):
    running, app = endless
    batcher = app.state.serve.batcher
    metrics_before = httpx.get(f"{running.url}/metrics", headers=AUTH).text
    steps_before = metric(metrics_before, "biomedgpt_batch_size_count")
    body = user("describe the findings", stream=True, max_tokens=10**6)  # clamped to LONG_BUDGET
    with (
        httpx.Client(base_url=running.url, headers=AUTH, timeout=60) as api,
        api.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.headers["x-biomedgpt-max-tokens"] == str(LONG_BUDGET)
        for line in response.iter_lines():
            chunk = json.loads(line[len("data: ") :]) if line.startswith("data: {") else None
            if chunk and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                break  # the first words are here: the client leaves
    deadline = time.monotonic() + 10
    while batcher.running_rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.running_rows == 0 and batcher.queue_size == 0
    time.sleep(0.2)
    steps = metric(httpx.get(f"{running.url}/metrics", headers=AUTH).text, "biomedgpt_batch_size_count")
    assert steps - steps_before < LONG_BUDGET, "the job decoded to its end after its client left"
    # and the server goes on serving
    after = httpx.post(f"{running.url}/v1/chat/completions", headers=AUTH, json=user("hello", max_tokens=3))
    assert after.status_code == 200, after.text


def test_onnx_runtime_streams_text_only_and_image_chats(exported_model_dir):
    with serving(exported_model_dir, engine="onnxruntime") as (running, app):
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)
        model = client.models.list().data[0].id  # the export's own id: a free instruction
        for content in ("describe the findings", [{"type": "text", "text": "describe"}, image_part()]):
            messages = [{"role": "user", "content": content}]
            whole = client.chat.completions.create(model=model, messages=messages, max_tokens=16)
            chunks = client.chat.completions.create(
                model=model, messages=messages, max_tokens=16, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == whole.choices[0].message.content and whole.usage.completion_tokens >= 1
            assert whole.system_fingerprint.startswith("fp_onnxruntime_fp32_")
        assert app.state.serve.batcher.running_rows == 0


# ----------------------------------------------------------------------------- the chat surface


def test_text_only_chats_work_for_free_instructions_and_text_tasks(api):
    free = api.post("/v1/chat/completions", json=user("Say hello in exactly 3 words.", max_tokens=8))
    assert free.status_code == 200, free.text
    assert free.json()["biomedgpt"]["prompt"] == " Say hello in exactly 3 words."
    vqa = api.post("/v1/chat/completions", json={**user("is there an effusion"), "model": f"{MODEL_ID}:vqa"})
    assert vqa.status_code == 200 and vqa.json()["choices"][0]["message"]["content"] in ANSWERS
    image = api.post(
        "/v1/chat/completions",
        json=user([{"type": "text", "text": "Say hello in exactly 3 words."}, image_part()], max_tokens=8),
    )
    assert image.json()["biomedgpt"]["prompt"] == free.json()["biomedgpt"]["prompt"]
    for task in ("detection", "segmentation", "grounding"):
        error = assert_json_error(api.post("/v1/chat/completions", json={**user("liver"), "task": task}), 422)
        assert error["param"] == "messages" and f"task {task} needs an image" in error["message"]


def test_system_and_history_reach_the_prompt_in_order(api):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "my scan"}, image_part()]},
        {"role": "assistant", "content": "a chest film"},
        {"role": "tool", "content": "left out"},
        {"role": "developer", "content": "Be precise."},
        {"role": "user", "content": "describe the findings"},
        {"role": "assistant", "content": "after the last user message: left out"},
    ]
    response = api.post(
        "/v1/chat/completions", json={"model": MODEL_ID, "messages": messages, "max_tokens": 4}
    )
    assert response.status_code == 200, response.text
    extra = response.json()["biomedgpt"]
    assert extra["prompt"] == " Answer briefly. Be precise. my scan a chest film describe the findings"
    assert extra["dropped_turns"] == 0
    vqa = {
        "model": f"{MODEL_ID}:vqa",
        "messages": [
            {"role": "system", "content": "Radiology."},
            {"role": "user", "content": "is there an effusion"},
        ],
    }
    assert (
        api.post("/v1/chat/completions", json=vqa).json()["biomedgpt"]["prompt"]
        == " Radiology. is there an effusion?"
    )


def test_the_oldest_turns_are_dropped_to_fit_the_prompt_limit(api):
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn{i} " + "lung " * 40}
        for i in range(8)
    ]
    messages = [
        {"role": "system", "content": "Answer briefly."},
        *turns,
        {"role": "user", "content": "the last question"},
    ]
    response = api.post(
        "/v1/chat/completions", json={"model": MODEL_ID, "messages": messages, "max_tokens": 2}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    dropped = body["biomedgpt"]["dropped_turns"]
    prompt = body["biomedgpt"]["prompt"]
    assert 0 < dropped < len(turns) and body["usage"]["prompt_tokens"] <= 256  # max_prompt_tokens
    assert prompt.startswith(" Answer briefly. turn") and prompt.endswith(" the last question")
    assert f"turn{dropped} " in prompt and f"turn{dropped - 1} " not in prompt  # the oldest went first
    # one fewer dropped turn would not have fitted
    kept = [{"role": "system", "content": "Answer briefly."}, *turns[dropped - 1 :], messages[-1]]
    too_long = api.post("/v1/chat/completions", json={"model": MODEL_ID, "messages": kept, "max_tokens": 2})
    assert too_long.json()["biomedgpt"]["dropped_turns"] == 1
    # the last message alone too long: 422 naming messages
    alone = [{"role": "user", "content": "lung " * 400}]
    error = assert_json_error(
        api.post("/v1/chat/completions", json={"model": MODEL_ID, "messages": alone}), 422
    )
    assert error["param"] == "messages" and "tokens" in error["message"]


def test_a_budget_above_the_model_is_clamped_and_reported(endless):
    running, _ = endless
    with httpx.Client(base_url=running.url, headers=AUTH, timeout=60) as api:
        for param in ("max_tokens", "max_completion_tokens"):
            response = api.post("/v1/chat/completions", json=user("describe", **{param: 16384}))
            assert response.status_code == 200, response.text
            body = response.json()
            assert response.headers["x-biomedgpt-max-tokens"] == str(LONG_BUDGET)
            assert body["biomedgpt"]["max_tokens"] == LONG_BUDGET
            assert body["choices"][0]["finish_reason"] == "length"
            assert body["usage"]["completion_tokens"] == LONG_BUDGET
        within = api.post("/v1/chat/completions", json=user("describe", max_tokens=5))
        assert (
            within.headers["x-biomedgpt-max-tokens"] == "5"
            and within.json()["usage"]["completion_tokens"] == 5
        )
        for param, value in [("max_tokens", 0), ("max_tokens", -3), ("max_completion_tokens", 0)]:
            error = assert_json_error(
                api.post("/v1/chat/completions", json=user("hi", **{param: value})), 422
            )
            assert error["param"] == param and "at least 1" in error["message"]


def test_the_system_fingerprint_names_the_engine_and_is_stable(client):
    first = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    again = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "yo"}], max_tokens=2
    )
    assert isinstance(first.system_fingerprint, str) and first.system_fingerprint.startswith("fp_torch_fp32_")
    assert again.system_fingerprint == first.system_fingerprint


def test_sampling_follows_temperature_top_p_top_k_and_seed(api):
    def answer(**extra) -> str:
        response = api.post(
            "/v1/chat/completions", json=user("describe the findings", max_tokens=12, **extra)
        )
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    greedy = answer()
    assert answer(temperature=0, top_p=0.3, top_k=5, seed=1) == greedy  # temperature 0: greedy
    assert answer(temperature=1, top_k=1, seed=1) == greedy  # the one likeliest token: greedy again
    assert answer(top_p=0, seed=3) == greedy
    assert answer(temperature=1.5, seed=42) == answer(temperature=1.5, seed=42)  # same seed, same tokens
    assert answer(top_p=0.95, seed=7) == answer(top_p=0.95, seed=7)
    assert len({answer(temperature=1.5, seed=s) for s in range(4)} | {greedy}) > 2  # seeds differ
    assert answer(temperature=1.5, seed=-5) == answer(temperature=1.5, seed=-5)  # negative seeds too
    error = assert_json_error(api.post("/v1/chat/completions", json=user("hi", top_k=-1)), 422)
    assert error["param"] == "top_k"
    error = assert_json_error(
        api.post("/v1/chat/completions", json=user("hi", temperature=1, num_beams=3)), 422
    )
    assert error["param"] == "num_beams" and "sampling" in error["message"]


def test_n_choices_sample_with_consecutive_seeds(api):
    body = user("describe the findings", max_tokens=10, temperature=1.2, seed=11)
    response = api.post("/v1/chat/completions", json={**body, "n": 3})
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    singles = [api.post("/v1/chat/completions", json={**body, "seed": 11 + i}).json() for i in range(3)]
    assert [c["message"]["content"] for c in choices] == [
        s["choices"][0]["message"]["content"] for s in singles
    ]
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == sum(s["usage"]["completion_tokens"] for s in singles)
    assert usage["prompt_tokens"] == singles[0]["usage"]["prompt_tokens"]
    # streamed: every choice has its role, its deltas and its finish
    _, chunks = stream(api, {**body, "n": 2})
    assert finish_reasons(chunks).keys() == {0, 1}
    assert [streamed_text(chunks, i) for i in range(2)] == [c["message"]["content"] for c in choices[:2]]
    error = assert_json_error(api.post("/v1/chat/completions", json=user("hi", n=2)), 400)
    assert error["param"] == "n" and "sampling" in error["message"]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "get_weather"}}]),
        ("tool_choice", "required"),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("logprobs", True),
        ("top_logprobs", 2),
        ("response_format", {"type": "json_object"}),
        ("reasoning_effort", "low"),
        ("reasoning", {"summary": "auto"}),
        ("logit_bias", {"42": 5}),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
    ],
)
def test_unsupported_parameters_get_a_400_naming_them(api, param, value):
    error = assert_json_error(api.post("/v1/chat/completions", json=user("hi", **{param: value})), 400)
    assert error["param"] == param and param in error["message"] and error["type"] == "invalid_request_error"


def test_their_default_values_are_accepted(client):
    completion = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        tool_choice="none",
        logprobs=False,
        response_format={"type": "text"},
        parallel_tool_calls=True,
        store=False,
        metadata={"run": "1"},
        modalities=["text"],
        user="someone",
    )
    assert completion.choices[0].message.role == "assistant" and completion.choices[0].logprobs is None


def test_the_tasks_route_says_where_streaming_is(api):
    body = {"image": base64.b64encode(png_bytes()).decode(), "stream": True}
    error = assert_json_error(api.post("/v1/tasks/caption", json=body), 400)
    assert error["param"] == "stream" and "/v1/chat/completions" in error["message"]
