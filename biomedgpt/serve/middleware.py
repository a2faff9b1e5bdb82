"""ASGI middleware of the API: request metrics, the connection cap, the API key on /v1, and the body limits.

Pure ASGI (not `BaseHTTPMiddleware`) so the body is never buffered here: the key is checked before a byte of
the body is read, and the size limit is enforced on Content-Length and again while the body streams in (a
chunked upload has no Content-Length), as is the deadline for the whole body to arrive.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from biomedgpt.serve.http_errors import APIError, error_response
from biomedgpt.serve.metrics import DISCONNECTED_STATUS, ServeMetrics, method_label
from biomedgpt.serve.protocol import OVER_CAPACITY

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1"
CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit; the error handlers answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes", headers=CLOSE)


class BodyTimeout(HTTPException):
    """Raised from `receive` when the body is not complete in time; the error handlers answer 408 and close."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s", headers=CLOSE)


class RequestMetricsMiddleware:
    """Counts every response by route template, method and status, and times it.

    Labels are bounded: routes are the app's templates (else "other"), methods the standard ones (else
    "other"). A client that disconnects before the response starts is counted with status 499 and error code
    `client_disconnect` and logged in one line, whatever the app made of the missing body.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        disconnected = False
        received = 0

        async def watch_receive() -> Message:
            nonlocal disconnected, received
            message = await receive()
            if message["type"] == "http.disconnect" and status == 500:  # before any response
                disconnected = True
            received += len(message.get("body", b""))
            return message

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, watch_receive, send_status)
        finally:
            route = _route_label(scope)
            if disconnected:
                status = DISCONNECTED_STATUS
                self.metrics.errors.labels(code="client_disconnect").inc()
                client = f"{scope['client'][0]}:{scope['client'][1]}" if scope.get("client") else "a client"
                log.info(
                    "%s disconnected before its request was complete (%s %s, %d body bytes received)",
                    client,
                    method_label(scope["method"]),
                    route,
                    received,
                )
            self.metrics.observe_request(
                route=route, method=scope["method"], status=status, seconds=time.perf_counter() - started
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
    return "other"


class ConnectionCapMiddleware:
    """503 (JSON, Retry-After, then close) for requests on a connection opened beyond `max_connections`."""

    def __init__(self, app: ASGIApp, *, max_connections: int, metrics: ServeMetrics) -> None:
        self.app = app
        self.max_connections = max_connections
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope.get("state") or {}).get(OVER_CAPACITY):
            err = APIError(
                503,
                f"the server has its limit of {self.max_connections} connections open; retry shortly",
                code="too_many_connections",
                headers={"Retry-After": "1", **CLOSE},
            )
            await error_response(err, self.metrics)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class APIKeyMiddleware:
    """Every path under /v1 needs the key, as `Authorization: Bearer KEY` or `x-api-key: KEY`, and so do the
    paths in `protected_paths` (/metrics, /openapi.json unless the config opens them).

    Unknown /v1 paths answer 401 too, so the key gates even the discovery of routes. /health and /ready are never
    protected (probes of an orchestrator send no key). Comparison is constant-time.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        metrics: ServeMetrics,
        protected_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.metrics = metrics
        self.protected_paths = frozenset(protected_paths)

    def protects(self, path: str) -> bool:
        return (
            path == PROTECTED_PREFIX
            or path.startswith(PROTECTED_PREFIX + "/")
            or path.rstrip("/") in self.protected_paths
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protected = self.protects(scope.get("path", ""))
        if self.api_key is None or scope["type"] != "http" or not protected:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        presented = _presented_key(headers)
        if presented is not None and hmac.compare_digest(presented, self.api_key):
            await self.app(scope, receive, send)
            return
        err = APIError(
            401,
            f"{_key_problem(headers, presented)}: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
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


def _key_problem(headers: dict[bytes, bytes], presented: bytes | None) -> str:
    """What is wrong with the credentials of a refused request, without echoing them."""
    if presented is not None:
        return "invalid API key"
    authorization = headers.get(b"authorization", b"").strip()
    if not authorization:
        return "missing API key"
    scheme = authorization.partition(b" ")[0]
    if scheme.lower() == b"bearer":
        return "the Authorization header has the scheme Bearer but no key"
    shown = scheme.decode("ascii", "replace")[:20]
    shown = "".join(c if c.isprintable() else "?" for c in shown)
    return f"the Authorization scheme must be Bearer, not {shown!r}"


class BodyLimitMiddleware:
    """413 for a declared Content-Length over the limit (before reading), or once a streamed body passes it;
    408 when the whole body has not arrived `body_timeout_s` after the request started."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float, metrics: ServeMetrics
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
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
        deadline = time.monotonic() + self.body_timeout_s
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive only waits for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise BodyTimeout(self.body_timeout_s) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
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
            return APIError(
                413,
                f"the request body is larger than the limit of {self.max_body_bytes} bytes",
                headers=CLOSE,
            )
        return None
