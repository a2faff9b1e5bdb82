"""ASGI middleware of the API: request metrics, the API key on /v1, and the request body limit.

Pure ASGI (not `BaseHTTPMiddleware`) so the body is never buffered here: the key is checked before a byte of
the body is read, and the size limit is enforced on Content-Length and again while the body streams in (a
chunked upload has no Content-Length).
"""

from __future__ import annotations

import hmac
import time

from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from biomedgpt.serve.http_errors import APIError, error_response
from biomedgpt.serve.metrics import ServeMetrics

PROTECTED_PREFIX = "/v1"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit; the error handlers answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


class RequestMetricsMiddleware:
    """Counts every response by route template, method and status, and times it."""

    def __init__(self, app: ASGIApp, *, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(
                route=_route_label(scope),
                method=scope["method"],
                status=status,
                seconds=time.perf_counter() - started,
            )


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return route.path
    app = scope.get("app")  # a request answered before routing (401, 413): find its route by matching
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches({**scope, "type": "http"})
        if match != Match.NONE and hasattr(candidate, "path"):
            return candidate.path
    return "unmatched"


class APIKeyMiddleware:
    """Every path under /v1 needs the key, as `Authorization: Bearer KEY` or `x-api-key: KEY`.

    Unknown /v1 paths answer 401 too, so the key gates even the discovery of routes. Comparison is constant-time.
    """

    def __init__(self, app: ASGIApp, *, api_key: str | None, metrics: ServeMetrics) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        protected = path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        if self.api_key is None or scope["type"] != "http" or not protected:
            await self.app(scope, receive, send)
            return
        presented = _presented_key(dict(scope["headers"]))
        if presented is not None and hmac.compare_digest(presented, self.api_key):
            await self.app(scope, receive, send)
            return
        message = "missing API key" if presented is None else "invalid API key"
        err = APIError(
            401,
            f"{message}: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await error_response(err, self.metrics)(scope, receive, send)


def _presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    authorization = headers.get(b"authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    key = headers.get(b"x-api-key")
    return key.strip() if key is not None and key.strip() else None


class BodyLimitMiddleware:
    """413 for a declared Content-Length over the limit (before reading), or once a streamed body passes it."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: ServeMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            error = self._check_declared(declared)
            if error is not None:
                await error_response(error, self.metrics)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send)

    def _check_declared(self, declared: bytes) -> APIError | None:
        try:
            length = int(declared)
        except ValueError:
            return APIError(400, "the Content-Length header is not a number")
        if length > self.max_body_bytes:
            return APIError(413, f"the request body is larger than the limit of {self.max_body_bytes} bytes")
        return None
