"""A small client for the BiomedGPT HTTP API (`biomedgpt serve`), standard library only.

It speaks the endpoints the demo needs: `POST /v1/tasks/{task}` (JSON with a base64 image and the task's
field), `POST /v1/chat/completions` streamed (server-sent events, OpenAI's chunks), `GET /v1/models` and
`GET /ready`. A 4xx/5xx answer becomes an `ApiError` carrying the server's own message, so the demo can show it;
an unreachable server is an `ApiError` with status 503.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from PIL import Image

from biomedgpt.serve.types import RequestError


class ApiError(RequestError):
    """The API refused a request or could not be reached; `status` is the HTTP status (503 when unreachable)."""


class ApiClient:
    """Calls one BiomedGPT server; `api_key` is sent as `Authorization: Bearer KEY` when given."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 120.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the API address must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def ready(self) -> bool:
        """True when `/ready` answers 2xx (the model is loaded)."""
        try:
            self.check_ready()
        except ApiError:
            return False
        return True

    def check_ready(self) -> dict[str, Any]:
        """`GET /ready`; `ApiError` 503 while the server loads its model or when it cannot be reached."""
        return self._request("GET", "/ready")

    def models(self) -> list[dict[str, Any]]:
        """The served models (`GET /v1/models`, OpenAI's list shape: {"data": [{"id": ...}, ...]})."""
        body = self._request("GET", "/v1/models")
        data = body.get("data", []) if isinstance(body, dict) else body
        return [m for m in data if isinstance(m, dict)]

    def run_task(
        self,
        task: str,
        image: Image.Image,
        *,
        fields: dict[str, str] | None = None,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/tasks/{task}`; the response JSON, masks asked for as PNG."""
        payload: dict[str, Any] = {"image": encode_png(image), "mask_format": "png", **(fields or {})}
        if max_new_tokens is not None:
            payload["max_new_tokens"] = max_new_tokens
        if num_beams is not None:
            payload["num_beams"] = num_beams
        return self._request("POST", f"/v1/tasks/{task}", payload)

    def chat_stream(
        self, model: str, image: Image.Image, *, text: str = "", max_tokens: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """`POST /v1/chat/completions` with `stream: true`, one user message (`text`, if any, and the image as a
        PNG data URL): each chunk as it arrives, until `data: [DONE]`. An error event is an `ApiError`."""
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content.append(
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + encode_png(image)}}
        )
        payload: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "stream": True,
        }
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        with self._open("POST", "/v1/chat/completions", payload, accept="text/event-stream") as response:
            try:
                for raw in response:  # one line at a time, as the server flushes them
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, `event:`/`id:` fields
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise ApiError(error_message(data.encode(), 500), status=500)
                    yield chunk
            except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
                raise ApiError(f"the API at {self.base_url} stopped streaming: {err}", status=502) from None
        raise ApiError("the API's stream ended without [DONE]", status=502)

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        with self._open(method, path, payload) as response:
            try:
                raw = response.read()
            except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
                raise ApiError(f"the API at {self.base_url} stopped answering: {err}", status=503) from None
        return json.loads(raw) if raw else {}

    @contextlib.contextmanager
    def _open(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        accept: str = "application/json",
    ) -> Iterator[http.client.HTTPResponse]:
        """The open response to one request; a 4xx/5xx or an unreachable server is an `ApiError`."""
        headers = {"Accept": accept}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            raise ApiError(error_message(err.read(), err.code), status=err.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            raise ApiError(f"the API at {self.base_url} cannot be reached: {reason}", status=503) from None
        with response:
            yield response


def error_message(raw: bytes, status: int) -> str:
    """The human part of an error body: {"error": {"message"}}, {"error": "..."}, FastAPI's {"detail"}, or text."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = raw.decode("utf-8", "replace").strip()
        return f"HTTP {status}: {text[:300] or 'no message'}"
    message: Any = body
    if isinstance(body, dict):
        message = body.get("error", body.get("detail", body))
        if isinstance(message, dict):
            message = message.get("message", json.dumps(message))
    if isinstance(message, list):  # FastAPI validation errors: [{"loc": [...], "msg": "..."}]
        message = "; ".join(
            str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in message
        )
    return f"HTTP {status}: {message}"


def encode_png(image: Image.Image) -> str:
    """A PIL image -> base64 PNG (lossless, so the server sees the pixels the user uploaded)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png_mask(data: str) -> Image.Image:
    """A base64 PNG mask from the API -> its PIL image."""
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image
