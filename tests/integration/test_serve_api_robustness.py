"""The HTTP API under hostile input: every bad request is a JSON 4xx and the server lives on; fuzzing never 5xx.

A real uvicorn server on 127.0.0.1 (tests/integration/_serve_api.py). The bad-input suite names each case; the
fuzz tests draw requests from the live /openapi.json schema, from valid-shaped requests with arbitrary text and
numbers (these reach the model), and from raw methods, paths, content types and bytes.
"""

from __future__ import annotations

import base64
import http.client
import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration._openapi_strategies import (
    ANY_JSON,
    INTEGERS,
    from_schema,
    json_body_schema,
    operations,
)
from tests.integration._serve_api import (
    AUTH,
    BODY_LIMIT,
    DATA_URL,
    MODEL_ID,
    PNG,
    PNG_B64,
    TASK_FIELDS,
    TASKS,
    assert_json_error,
    bomb_png,
    chat_kwargs,
    image_part,
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


# ----------------------------------------------------------------------------- bad input: 4xx, never a crash


CORRUPT = PNG[:60] + b"\x00garbage" * 8
TEXT_FILE = b"patient: anonymous\nfindings: none\n"
BAD_INPUTS = {
    # name: (method, path, request kwargs, status, words the message must contain)
    "corrupt-image-json": (
        "POST",
        "/v1/tasks/caption",
        {"json": {"image": base64.b64encode(CORRUPT).decode()}},
        422,
        "decoded",
    ),
    "corrupt-image-file": (
        "POST",
        "/v1/tasks/caption",
        {"files": {"image": ("a.png", CORRUPT, "image/png")}},
        422,
        "decoded",
    ),
    "text-file-as-image": (
        "POST",
        "/v1/tasks/caption",
        {"files": {"image": ("a.txt", TEXT_FILE, "text/plain")}},
        422,
        "decoded",
    ),
    "bomb-json": (
        "POST",
        "/v1/tasks/caption",
        {"json": {"image": base64.b64encode(bomb_png()).decode()}},
        413,
        "pixels",
    ),
    "bomb-file": (
        "POST",
        "/v1/tasks/vqa",
        {"files": {"image": ("b.png", bomb_png(), "image/png")}, "data": {"question": "q"}},
        413,
        "pixels",
    ),
    "bomb-chat": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([image_part("data:image/png;base64," + base64.b64encode(bomb_png()).decode())]),
        413,
        "pixels",
    ),
    "empty-body-json": (
        "POST",
        "/v1/tasks/caption",
        {"content": b"", "headers": {"content-type": "application/json"}},
        422,
        "empty",
    ),
    "empty-body-chat": (
        "POST",
        "/v1/chat/completions",
        {"content": b"", "headers": {"content-type": "application/json"}},
        422,
        "empty",
    ),
    "empty-image-file": (
        "POST",
        "/v1/tasks/caption",
        {"files": {"image": ("a.png", b"", "image/png")}},
        422,
        "empty",
    ),
    "no-image": ("POST", "/v1/tasks/caption", {"json": {"max_new_tokens": 2}}, 422, "image"),
    "wrong-content-type": (
        "POST",
        "/v1/tasks/caption",
        {"content": PNG, "headers": {"content-type": "image/png"}},
        415,
        "content type",
    ),
    "no-content-type": ("POST", "/v1/tasks/caption", {"content": b"x"}, 415, "content type"),
    "chat-form-encoded": ("POST", "/v1/chat/completions", {"data": {"model": MODEL_ID}}, 415, "content type"),
    "unknown-task": ("POST", "/v1/tasks/infill", {"json": {"image": PNG_B64}}, 404, "unknown task"),
    "unknown-route": ("GET", "/v2/whatever", {}, 404, "not a route"),
    "wrong-method": ("GET", "/v1/tasks/caption", {}, 405, "not allowed"),
    "over-long-prompt": (
        "POST",
        "/v1/tasks/vqa",
        {"json": {"image": PNG_B64, "question": "effusion " * 400}},
        422,
        "tokens",
    ),
    "over-long-chat": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([{"type": "text", "text": "lung " * 400}, image_part()]),
        422,
        "tokens",
    ),
    "invalid-json": (
        "POST",
        "/v1/tasks/caption",
        {"content": b'{"image": ', "headers": {"content-type": "application/json"}},
        400,
        "JSON",
    ),
    "invalid-json-chat": (
        "POST",
        "/v1/chat/completions",
        {"content": b"{'a': 1}", "headers": {"content-type": "application/json"}},
        400,
        "JSON",
    ),
    "json-not-an-object": ("POST", "/v1/tasks/caption", {"json": [1, 2]}, 422, "object"),
    "invalid-base64": ("POST", "/v1/tasks/caption", {"json": {"image": "not base64!!"}}, 422, "base64"),
    "unknown-field": (
        "POST",
        "/v1/tasks/caption",
        {"json": {"image": PNG_B64, "max_new_token": 3}},
        422,
        "max_new_token",
    ),
    "field-of-another-task": (
        "POST",
        "/v1/tasks/caption",
        {"json": {"image": PNG_B64, "question": "q"}},
        422,
        "question",
    ),
    "missing-task-field": ("POST", "/v1/tasks/grounding", {"json": {"image": PNG_B64}}, 422, "text"),
    "negative-max-new-tokens": (
        "POST",
        "/v1/tasks/caption",
        {"json": {"image": PNG_B64, "max_new_tokens": -1}},
        422,
        "max_new_tokens",
    ),
    "too-many-beams": (
        "POST",
        "/v1/tasks/caption",
        {"json": {"image": PNG_B64, "num_beams": 100}},
        422,
        "num_beams",
    ),
    "bad-mask-format": (
        "POST",
        "/v1/tasks/segmentation",
        {"json": {"image": PNG_B64, "structure": "x", "mask_format": "jpeg"}},
        422,
        "mask_format",
    ),
    "negative-max-tokens": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([image_part()], max_tokens=-5),
        422,
        "max_tokens",
    ),
    "zero-max-tokens": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([image_part()], max_tokens=0),
        422,
        "max_tokens",
    ),
    "negative-completion-tokens": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([image_part()], max_completion_tokens=-(2**70)),
        422,
        "max_completion_tokens",
    ),
    "remote-image": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([image_part("http://example.org/a.png")]),
        422,
        "remote images are not fetched",
    ),
    "no-image-grounding-chat": (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": f"{MODEL_ID}:grounding", "messages": [{"role": "user", "content": "left lung"}]}},
        422,
        "needs an image",
    ),
    "two-images": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([image_part(), image_part()]),
        422,
        "one image",
    ),
    "stream-task": ("POST", "/v1/tasks/caption", {"json": {"image": PNG_B64, "stream": True}}, 400, "stream"),
    "n-2-greedy": ("POST", "/v1/chat/completions", chat_kwargs([image_part()], n=2), 400, "needs sampling"),
    "n-too-many": ("POST", "/v1/chat/completions", chat_kwargs("hi", n=9, temperature=1), 422, "n must be"),
    "tools": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs("hi", tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tool calling",
    ),
    "unknown-model": (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}},
        404,
        "not served",
    ),
    "unknown-model-task": (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": f"{MODEL_ID}:infill", "messages": [{"role": "user", "content": "hi"}]}},
        404,
        "unknown task",
    ),
    "bad-content-part": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([{"type": "input_audio", "input_audio": {}}]),
        422,
        "messages[0].content",
    ),
    "no-messages": (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": MODEL_ID, "messages": []}},
        422,
        "messages",
    ),
    "not-base64-data-url": (
        "POST",
        "/v1/chat/completions",
        chat_kwargs([image_part("data:image/png,abc")]),
        422,
        "base64",
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_a_json_4xx_and_the_server_lives_on(api, name):
    method, path, kwargs, status, words = BAD_INPUTS[name]
    error = assert_json_error(api.request(method, path, **kwargs), status)
    assert words.lower() in error["message"].lower(), error
    assert api.get("/health").status_code == 200


def test_a_declared_oversized_body_is_refused_before_it_is_read(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.config.port, timeout=10)
    connection.putrequest("POST", "/v1/tasks/caption")
    for key, value in {**AUTH, "Content-Type": "application/json", "Content-Length": str(10**9)}.items():
        connection.putheader(key, value)
    connection.endheaders()  # no body is ever sent: the answer must not wait for it
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "request_too_large"
    connection.close()


def test_a_streamed_oversized_body_is_cut_off(api):
    def chunks():  # chunked transfer, no Content-Length; passes the limit on the last chunk only
        yield b'{"image": "'
        for _ in range(BODY_LIMIT // 65536):
            yield b"A" * 65536
        yield b'"}'

    error = assert_json_error(
        api.post("/v1/tasks/caption", content=chunks(), headers={"content-type": "application/json"}), 413
    )
    assert error["code"] == "request_too_large"
    assert api.get("/health").status_code == 200


# ----------------------------------------------------------------------------- fuzz: never a 5xx


def test_fuzz_the_openapi_schema_never_gives_5xx(api):
    spec = api.get("/openapi.json").json()
    ops = operations(spec)
    model_names = st.sampled_from([MODEL_ID, *(f"{MODEL_ID}:{t}" for t in TASKS), "gpt-4o", f"{MODEL_ID}:"])
    hints = {
        "image": st.sampled_from([PNG_B64, DATA_URL, base64.b64encode(TEXT_FILE).decode(), ""]),
        "url": st.sampled_from([DATA_URL, "https://example.org/x.png", "data:,", "data:image/png;base64,@@"]),
        "model": model_names,
        "max_new_tokens": st.integers(1, 6),
        "max_tokens": st.integers(1, 6),
        "max_completion_tokens": st.integers(1, 6),
        "messages": st.builds(
            lambda text, url: [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            st.text(max_size=30),
            st.sampled_from([DATA_URL, DATA_URL, "data:image/png;base64,AAAA"]),
        ),
        "stream": st.just(False),
        "n": st.just(1),
    }
    bodies = {(m, p): from_schema(s, spec, hints=hints) for m, p, op in ops if (s := json_body_schema(op))}
    path_values = st.one_of(
        st.sampled_from(TASKS),
        st.sampled_from(TASKS),
        st.sampled_from(["nope", MODEL_ID]),
        st.text(max_size=12),
    )

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def never_5xx(data):
        method, template, operation = data.draw(st.sampled_from(ops))
        path = template
        for param in operation.get("parameters", []):
            if param["in"] == "path":
                path = path.replace("{" + param["name"] + "}", quote(data.draw(path_values), safe=""))
        kwargs = {}
        if (method, template) in bodies:
            kwargs["json"] = data.draw(
                st.one_of(bodies[(method, template)], bodies[(method, template)], ANY_JSON)
            )
        response = api.request(method, path, **kwargs)
        assert response.status_code < 500, (method, path, kwargs, response.text)
        if response.status_code >= 400 and path != "/ready":
            assert set(response.json()["error"]) == {"message", "type", "code", "param"}

    never_5xx()
    assert api.get("/health").status_code == 200


def task_requests() -> st.SearchStrategy:
    """(task, body) pairs shaped like valid requests, with arbitrary text and numbers in them."""

    def body_for(task: str) -> st.SearchStrategy:
        optional = {
            "prompt": st.text(max_size=40),
            "num_beams": st.integers(-1, 9),
            "closed_set": st.none() | st.booleans(),
            "mask_format": st.sampled_from(["png", "rle", "both"]),
        }
        # Always a budget: the default one (257 tokens for segmentation) times 8 beams would take seconds.
        required = {"image": st.sampled_from([PNG_B64, DATA_URL]), "max_new_tokens": INTEGERS}
        if task in TASK_FIELDS:
            (slot,) = TASK_FIELDS[task]
            required[slot] = st.text(max_size=60)
        return st.fixed_dictionaries(required, optional=optional)

    return st.sampled_from(TASKS).flatmap(lambda task: st.tuples(st.just(task), body_for(task)))


def chat_requests() -> st.SearchStrategy:
    text_parts = st.builds(lambda text: {"type": "text", "text": text}, st.text(max_size=40))
    user = st.builds(
        lambda texts, at: {"role": "user", "content": [*texts[:at], image_part(), *texts[at:]]},
        st.lists(text_parts, max_size=2),
        st.integers(0, 2),
    )
    history = st.lists(
        st.builds(
            lambda role, text: {"role": role, "content": text},
            st.sampled_from(["system", "assistant"]),
            st.text(max_size=20),
        ),
        max_size=2,
    )
    models = st.sampled_from([MODEL_ID, *(f"{MODEL_ID}:{t}" for t in TASKS)])
    return st.fixed_dictionaries(
        {
            "model": models,
            "messages": st.tuples(history, user).map(lambda pair: [*pair[0], pair[1]]),
            "max_tokens": INTEGERS,
        },
        optional={
            "temperature": st.floats(0, 2),
            "mask_format": st.sampled_from(["png", "rle", "both"]),
        },
    )


def test_fuzz_valid_shaped_requests_reach_the_model_and_never_give_5xx(api):
    statuses: list[int] = []

    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(request=st.one_of(task_requests(), chat_requests()))
    def never_5xx(request):
        if isinstance(request, tuple):
            response = api.post(f"/v1/tasks/{request[0]}", json=request[1])
        else:
            response = api.post("/v1/chat/completions", json=request)
        statuses.append(response.status_code)
        assert response.status_code < 500, (request, response.text)
        if response.status_code >= 400:
            assert response.json()["error"]["message"]

    never_5xx()
    assert statuses.count(200) >= len(statuses) // 4, statuses  # most get to the model, not just to a 422


def test_fuzz_raw_requests_never_give_5xx(api):
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    paths = st.sampled_from(
        ["/v1/tasks/caption", "/v1/tasks/vqa", "/v1/chat/completions", "/v1/models", "/health", "/"]
    ) | st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#%"), max_size=20
    ).map(lambda s: "/" + s)
    content_types = st.sampled_from(
        [
            "application/json",
            "multipart/form-data",
            "multipart/form-data; boundary=xx",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
        ]
    )

    @settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(
        method=methods,
        path=paths,
        content_type=content_types,
        body=st.binary(max_size=200) | ANY_JSON.map(lambda v: json.dumps(v).encode()),
    )
    def never_5xx(method, path, content_type, body):
        headers = {"content-type": content_type} if content_type else {}
        response = api.request(method, path, content=body, headers=headers)
        assert response.status_code < 500, (method, path, content_type, body, response.text)

    never_5xx()
    assert api.get("/health").status_code == 200
