"""The API against the hostile probe of issue 16: malformed images, disconnects, odd methods, stalled and surplus
connections, 16-bit images, error messages a person can act on, the OpenAI sampling parameters and `stop`, and
which routes need the key (/docs off by default). A real uvicorn server on 127.0.0.1.

Two servers: the suite's usual one (`running_api`), and a "tight" one with one-second deadlines, four connections
and a pixel limit above Pillow's own, for the tests that need those.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests._upload_samples import ACCEPTED_CONTENT_TYPES, accepted_samples, encode, mutate, refused_samples
from tests.integration._serve_api import (
    API_KEY,
    AUTH,
    MODEL_ID,
    assert_json_error,
    bomb_png,
    chat_kwargs,
    image_part,
    running_api,
)

pytestmark = pytest.mark.integration

TIGHT = {
    "header_timeout_s": 1.0,
    "body_timeout_s": 1.5,
    "keep_alive_timeout_s": 1.0,
    "max_connections": 4,
    "max_image_pixels": 100_000_000,
}


@pytest.fixture(scope="module")
def server(served_model_dir):
    with running_api(served_model_dir) as running:
        yield running


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def tight(served_model_dir):
    with running_api(served_model_dir, **TIGHT) as running:
        yield running


def metric_lines(server, name: str) -> list[str]:
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    return [line for line in text.splitlines() if line.startswith(name)]


def raw_connection(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.config.port), timeout=10)
    sock.settimeout(10)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


# ----------------------------------------------------------------------------- images: 4xx, never 5xx


@pytest.mark.parametrize("name", list(refused_samples()))
def test_malformed_and_other_formats_are_4xx_naming_the_format_on_every_route(api, name):
    data = refused_samples()[name]
    responses = {
        "form": api.post("/v1/tasks/caption", files={"image": ("upload.bin", data, "image/png")}),
        "json": api.post("/v1/tasks/caption", json={"image": base64.b64encode(data).decode()}),
        "chat": api.post("/v1/chat/completions", **chat_kwargs([image_part(data_url(data))])),
    }
    for route, response in responses.items():
        error = assert_json_error(response, 422)
        assert "could not be decoded" in error["message"], (route, error)
        assert ("TIFF" if "TIFF" in name else "send PNG, JPEG, WebP, BMP, TIFF or DICOM") in error["message"]
        assert " at 0x" not in error["message"]


@pytest.mark.parametrize("name", list(accepted_samples()))
def test_every_accepted_format_is_answered(api, name):
    filename = "scan.dcm" if name == "DICOM" else f"image.{name.lower()}"
    response = api.post(
        "/v1/tasks/caption",
        files={"image": (filename, accepted_samples()[name], ACCEPTED_CONTENT_TYPES[name])},
        data={"max_new_tokens": "2"},
    )
    assert response.status_code == 200, response.text


def test_a_16_bit_png_gets_the_answer_of_its_8_bit_scaling(api):
    rng = np.random.default_rng(3)
    gray16 = (rng.random((48, 64)) * 60000).astype(np.uint16)  # a 16-bit image using the whole range
    gray8 = (gray16.astype(np.float32) / 257.0).round().astype(np.uint8)  # how training data scales it

    def answer(pixels: np.ndarray) -> dict:
        body = {
            "image": base64.b64encode(encode(Image.fromarray(pixels), "PNG")).decode(),
            "text": "the lesion",
        }
        response = api.post("/v1/tasks/grounding", json=body)  # a box: it moves with what the model sees
        assert response.status_code == 200, response.text
        return response.json()["output"]

    clipped = np.minimum(gray16, 255).astype(np.uint8)  # what convert("RGB") made of it
    assert answer(gray16) == answer(gray8)
    assert answer(gray8) != answer(clipped)  # the model does see the difference


def test_fuzz_the_upload_paths_never_gives_5xx(api):
    """Mutated real files of every accepted format, and random bytes under every image content type, sent as a
    form file, as JSON base64 and as a chat data URL: a bounded budget of 150 requests."""
    import random

    samples = accepted_samples()
    content_types = sorted(
        {*ACCEPTED_CONTENT_TYPES.values(), "image/gif", "application/octet-stream", "text/plain"}
    )
    statuses: list[int] = []

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(
        name=st.sampled_from(sorted(samples)),
        seed=st.integers(0, 2**32 - 1),
        noise=st.none() | st.binary(max_size=2048),
        content_type=st.sampled_from(content_types),
        route=st.sampled_from(["form", "json", "chat"]),
    )
    def never_5xx(name, seed, noise, content_type, route):
        data = mutate(samples[name], random.Random(seed)) if noise is None else noise
        media = ACCEPTED_CONTENT_TYPES[name] if noise is None else content_type
        if route == "form":
            response = api.post(
                "/v1/tasks/caption", files={"image": ("upload", data, media)}, data={"max_new_tokens": "2"}
            )
        elif route == "json":
            response = api.post(
                "/v1/tasks/caption", json={"image": base64.b64encode(data).decode(), "max_new_tokens": 2}
            )
        else:
            response = api.post(
                "/v1/chat/completions", **chat_kwargs([image_part(data_url(data, media))], max_tokens=2)
            )
        statuses.append(response.status_code)
        assert response.status_code < 500, (name, route, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "code", "param"}

    never_5xx()
    assert api.get("/health").status_code == 200
    assert statuses.count(200) >= 10 and sum(400 <= s < 500 for s in statuses) >= 50, statuses


# ----------------------------------------------------------------------------- disconnects, metrics labels


def test_a_client_gone_mid_body_is_a_disconnect_not_a_server_error(server, caplog):
    caplog.set_level(logging.INFO)
    for path in ("/v1/tasks/caption", "/v1/chat/completions"):
        sock = raw_connection(server)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"image": "' + b"A" * 500)
        time.sleep(0.2)
        sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(metric_lines(server, "biomedgpt_requests_total")) < 1:
        time.sleep(0.05)
    time.sleep(0.3)
    requests = metric_lines(server, "biomedgpt_requests_total")
    assert not [line for line in requests if 'status="500"' in line], requests
    assert [line for line in requests if 'status="499"' in line], requests
    errors = metric_lines(server, "biomedgpt_request_errors_total")
    assert not [line for line in errors if "internal_error" in line], errors
    assert [line for line in errors if 'code="client_disconnect"' in line and line.endswith(" 2.0")], errors
    assert not [line for line in errors if 'code="bad_request"' in line], errors
    logged = [r for r in caplog.records if r.name.startswith("biomedgpt")]
    assert not [r for r in logged if r.levelno >= logging.ERROR or r.exc_info], [
        r.getMessage() for r in logged
    ]
    disconnects = [r.getMessage() for r in logged if "disconnected" in r.getMessage()]
    assert len(disconnects) == 2 and all("\n" not in line for line in disconnects)


def test_odd_methods_share_one_metric_label(server):
    for i in range(25):
        sock = raw_connection(server)
        sock.sendall(f"X{i}ODD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        read_until_closed(sock)
        sock.close()
    requests = metric_lines(server, "biomedgpt_requests_total")
    methods = {m for line in requests for m in re.findall(r'method="([^"]*)"', line)}
    assert "other" in methods and methods <= {
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
        "other",
    }


# ----------------------------------------------------------------------------- messages a person can act on


def test_the_413_quotes_our_pixel_limit(api):
    error = assert_json_error(
        api.post("/v1/tasks/caption", json={"image": base64.b64encode(bomb_png()).decode()}), 413
    )
    assert "40,000,000" in error["message"]
    assert "89,478,485" not in error["message"] and "178,956,970" not in error["message"]


def test_cheap_limits_are_checked_before_the_image(api):
    # The image would be refused too (413: 400 megapixels): the cheap checks must answer first.
    bomb = base64.b64encode(bomb_png()).decode()
    for body, words in (
        ({"question": "effusion " * 400}, "tokens"),
        ({"question": "q", "max_new_tokens": 10**6}, "max_new_tokens"),
        ({"question": "q", "num_beams": 99}, "num_beams"),
    ):
        error = assert_json_error(api.post("/v1/tasks/vqa", json={"image": bomb, **body}), 422)
        assert words in error["message"]


def test_a_pixel_limit_above_pillows_takes_effect(tight):
    png = encode(Image.new("L", (10_000, 9_500), 90), "PNG")  # 95 M pixels, over Pillow's 89,478,485
    response = httpx.post(
        f"{tight.url}/v1/tasks/caption",
        headers=AUTH,
        json={"image": base64.b64encode(png).decode(), "max_new_tokens": 2},
        timeout=60,
    )
    assert response.status_code == 200, response.text


def test_a_long_chat_text_names_the_length_limit(api):
    error = assert_json_error(
        api.post(
            "/v1/chat/completions", **chat_kwargs([{"type": "text", "text": "a" * 100_000}, image_part()])
        ),
        422,
    )
    assert "100,000 characters" in error["message"] and "20,000" in error["message"]
    assert error["param"] == "messages"
    plain = assert_json_error(api.post("/v1/chat/completions", **chat_kwargs("b" * 100_000)), 422)
    assert "20,000" in plain["message"]


def test_invalid_base64_names_the_field(api):
    task = assert_json_error(api.post("/v1/tasks/caption", json={"image": "not base64!!"}), 422)
    assert task["message"].startswith("the field 'image' is not valid base64")
    chat = assert_json_error(
        api.post("/v1/chat/completions", **chat_kwargs([image_part("data:image/png;base64,@@@@")])), 422
    )
    assert "image data URL in 'messages' is not valid base64" in chat["message"]


def test_an_unknown_field_name_is_not_echoed_in_full(api):
    form = api.post(
        "/v1/tasks/caption",
        files={"image": ("a.png", accepted_samples()["PNG"], "image/png")},
        data={"y" * 4000: "1"},
    )
    error = assert_json_error(form, 422)
    assert "unknown field" in error["message"] and len(form.content) < 1000
    json_body = {"image": base64.b64encode(accepted_samples()["PNG"]).decode(), "x" * 100_000: 1}
    response = api.post("/v1/tasks/caption", json=json_body)
    assert "unknown field" in assert_json_error(response, 422)["message"] and len(response.content) < 1000


@pytest.mark.parametrize("scheme", ["Token", "Basic"])
def test_a_key_under_another_scheme_is_told_to_use_bearer(server, scheme):
    response = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"{scheme} {API_KEY}"})
    error = assert_json_error(response, 401)
    assert f"scheme must be Bearer, not '{scheme}'" in error["message"]
    assert API_KEY not in response.text


def test_a_multipart_body_cut_before_its_boundary_says_so(api):
    request = httpx.Request(
        "POST",
        "http://x/",
        files={"image": ("a.png", accepted_samples()["PNG"], "image/png")},
        data={"max_new_tokens": "2"},
    )
    body = request.read()
    cut = body[: body.rindex(b"\r\n--")]  # the closing boundary never arrives
    response = api.post(
        "/v1/tasks/caption", content=cut, headers={"content-type": request.headers["content-type"]}
    )
    error = assert_json_error(response, 400)
    assert "truncated" in error["message"]


# ----------------------------------------------------------------------------- OpenAI parameters


def chat(api, text: str = "describe the findings", **extra) -> httpx.Response:
    return api.post(
        "/v1/chat/completions",
        **chat_kwargs([{"type": "text", "text": text}, image_part()], max_tokens=12, **extra),
    )


def test_sampling_parameters_in_range_are_accepted(api):
    plain = chat(api)
    assert plain.status_code == 200, plain.text
    # temperature 0 is greedy whatever top_p says; the penalties are accepted and ignored
    greedy = chat(api, temperature=0, top_p=0.5, presence_penalty=0.5, frequency_penalty=-1.5, seed=7)
    assert greedy.status_code == 200, greedy.text
    assert greedy.json()["choices"] == plain.json()["choices"]
    sampled = [chat(api, temperature=0.7, top_p=0.9, seed=7) for _ in range(2)]
    assert all(r.status_code == 200 for r in sampled), sampled[0].text
    assert sampled[0].json()["choices"] == sampled[1].json()["choices"]  # the same seed, the same answer
    edges = chat(api, temperature=2, top_p=0, presence_penalty=-2, frequency_penalty=2)
    assert edges.status_code == 200, edges.text


@pytest.mark.parametrize(
    ("param", "value", "range_text"),
    [
        ("temperature", -5, "between 0 and 2"),
        ("temperature", 2.5, "between 0 and 2"),
        ("top_p", 1.5, "between 0 and 1"),
        ("top_p", -0.1, "between 0 and 1"),
        ("presence_penalty", 3, "between -2 and 2"),
        ("frequency_penalty", -2.5, "between -2 and 2"),
    ],
)
def test_sampling_parameters_out_of_range_are_refused_by_name(api, param, value, range_text):
    error = assert_json_error(chat(api, **{param: value}), 422)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert (
        error["message"].startswith(f"{param}: must be {range_text}") and f"got {value:g}" in error["message"]
    )


def test_stop_cuts_the_answer_before_the_first_stop_string(api):
    whole = chat(api).json()["choices"][0]
    text = whole["message"]["content"]
    assert len(text) >= 4, text  # the tiny model says something to cut
    first, later = text[1:3], text[-2:]
    expected = text[: text.find(first)]
    for stop in (first, [later, "never in the answer", first]):
        choice = chat(api, stop=stop).json()["choices"][0]
        assert choice["message"]["content"] == expected and choice["finish_reason"] == "stop", (stop, choice)
    untouched = chat(api, stop=["never in the answer"]).json()["choices"][0]
    assert untouched == whole


def test_stop_and_penalties_through_the_openai_client(server):
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "describe the findings"}, image_part()]}
    ]
    whole = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=12)
    text = whole.choices[0].message.content or ""
    assert len(text) >= 4, text
    cut = client.chat.completions.create(
        model=MODEL_ID,
        messages=messages,
        max_tokens=12,
        stop=[text[2:4]],
        presence_penalty=0.5,
        frequency_penalty=0.5,
        temperature=0,
    )
    assert cut.choices[0].message.content == text[: text.find(text[2:4])]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stop", [[], [""], "", ["a", "b", "c", "d", "e"], 5, ["a", None]])
def test_an_invalid_stop_is_refused_by_name(api, stop):
    error = assert_json_error(chat(api, stop=stop), 422)
    assert error["param"] == "stop" and "1 to 4 non-empty strings" in error["message"]


# ----------------------------------------------------------------------------- what needs the key


def test_docs_are_off_and_metrics_and_schema_need_the_key_by_default(server):
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert_json_error(httpx.get(f"{server.url}{path}"), 404)
    for path in ("/health", "/ready"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path
    for path in ("/metrics", "/openapi.json"):
        error = assert_json_error(httpx.get(f"{server.url}{path}"), 401)
        assert "missing API key" in error["message"], path
        assert_json_error(httpx.get(f"{server.url}{path}", headers={"x-api-key": "wrong"}), 401)
        assert httpx.get(f"{server.url}{path}", headers=AUTH).status_code == 200, path
    assert "biomedgpt_requests_total" in httpx.get(f"{server.url}/metrics", headers=AUTH).text


def test_enable_docs_and_metrics_public_open_those_routes_only(served_model_dir):
    with running_api(served_model_dir, enable_docs=True, metrics_public=True) as running:
        docs = httpx.get(f"{running.url}/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower() and "/openapi.json" in docs.text
        assert httpx.get(f"{running.url}/redoc").status_code == 200
        assert httpx.get(f"{running.url}/openapi.json").json()["info"]["title"] == "BiomedGPT API"
        assert "biomedgpt_requests_total" in httpx.get(f"{running.url}/metrics").text
        assert_json_error(httpx.get(f"{running.url}/v1/models"), 401)  # the API itself still needs the key


def test_without_a_key_metrics_and_schema_are_open_and_docs_still_off(served_model_dir):
    with running_api(served_model_dir, api_key=None) as running:
        assert httpx.get(f"{running.url}/metrics").status_code == 200
        assert httpx.get(f"{running.url}/openapi.json").status_code == 200
        assert_json_error(httpx.get(f"{running.url}/docs"), 404)


# ----------------------------------------------------------------------------- deadlines and the connection cap


def test_a_silent_connection_is_closed(tight):
    sock = raw_connection(tight)
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert time.monotonic() - started < TIGHT["header_timeout_s"] + 2
    sock.close()


def test_headers_sent_a_byte_at_a_time_get_a_408(tight):
    sock = raw_connection(tight)
    started = time.monotonic()
    head = b"POST /v1/tasks/caption HTTP/1.1\r\nHost: x\r\n"
    try:
        for byte in head:  # slower than the deadline allows
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
    except OSError:
        pass  # closed under our feet: that is the point
    received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408") and b"request_timeout" in received
    assert time.monotonic() - started < len(head) * 0.1  # cut off well before the headers could finish
    sock.close()


def test_a_stalled_body_gets_a_408_and_is_closed(tight):
    sock = raw_connection(tight)
    head = (
        f"POST /v1/tasks/caption HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    started = time.monotonic()
    sock.sendall(head.encode() + b'{"image": "')
    received = read_until_closed(sock)
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    body = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout" and "1.5 s" in body["error"]["message"]
    assert TIGHT["body_timeout_s"] - 0.2 < elapsed < TIGHT["body_timeout_s"] + 2
    sock.close()


def test_an_idle_keep_alive_connection_is_closed(tight):
    sock = raw_connection(tight)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < TIGHT["keep_alive_timeout_s"] + 2
    sock.close()


def test_connections_past_the_cap_get_a_503(tight):
    time.sleep(TIGHT["header_timeout_s"] + 0.5)  # earlier tests' connections are gone by now
    held = [raw_connection(tight) for _ in range(TIGHT["max_connections"])]
    try:
        time.sleep(0.2)
        response = httpx.get(f"{tight.url}/health", headers={"Connection": "close"})
        error = assert_json_error(response, 503)
        assert error["code"] == "too_many_connections" and response.headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{tight.url}/health").status_code == 200


# ----------------------------------------------------------------------------- memory after a burst


def _rss_mb() -> float:
    with open("/proc/self/status") as f:  # the server runs in this process
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_memory_comes_back_after_a_burst_of_large_decodes(server):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    # 0.1 MB each, 5000x5000 RGBA once decoded: about 100 MB apiece.
    body = {
        "image": base64.b64encode(encode(Image.new("RGBA", (5000, 5000), (9, 9, 9, 255)), "PNG")).decode()
    }
    body["max_new_tokens"] = 2

    def post(_: int) -> int:
        return httpx.post(f"{server.url}/v1/tasks/caption", headers=AUTH, json=body, timeout=120).status_code

    assert post(0) == 200  # warm: the first large decode sizes the allocator's arenas
    time.sleep(0.5)
    before, peak, done = _rss_mb(), 0.0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(8)))
    done.set()
    sampler.join()
    time.sleep(1.0)
    after = _rss_mb()
    assert statuses == [200] * 8
    assert peak - before < 450, (before, peak, after)  # decodes wait for the budget instead of piling up
    assert after - before < 100, (before, peak, after)  # and what they held is given back
