"""One error shape for every failure: `{"error": {"message", "type", "code", "param"}}` (OpenAI's).

Installed on the app for FastAPI's validation errors, Starlette's 404/405/400, the engine's `RequestError`s,
our own `APIError`s and anything unexpected (500, logged; the message never leaks internals). Clients such as
the `openai` package read `error.message` from this shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from biomedgpt.serve.metrics import ServeMetrics
from biomedgpt.serve.types import RequestError

log = logging.getLogger(__name__)

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}
_CODES = {
    400: "bad_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_value",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


class APIError(Exception):
    """An error the server answers on purpose, with its status, code and the parameter at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")
        self.param = param
        self.headers = headers


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error"),
            "code": code or _CODES.get(status, "error"),
            "param": param,
        }
    }


def error_response(err: APIError, metrics: ServeMetrics | None = None) -> JSONResponse:
    if metrics is not None:
        metrics.errors.labels(code=err.code).inc()
    body = error_body(err.status, err.message, code=err.code, param=err.param)
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def install_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    """Route every exception type a request can raise to the one JSON error shape."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return error_response(exc, metrics)

    async def request_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        return error_response(APIError(exc.status, exc.message, param=exc.field), metrics)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(from_validation_errors(list(exc.errors())), metrics)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        # FastAPI answers a client lost mid-body with "There was an error parsing the body": not a bad request.
        if exc.status_code == 400 and await request.is_disconnected():
            return await client_disconnect(request, exc)
        return error_response(from_http_exception(request, exc), metrics)

    async def client_disconnect(request: Request, exc: Exception) -> JSONResponse:
        # Nobody reads this answer; the metrics middleware counts and logs the disconnect (status 499).
        return JSONResponse(error_body(400, "the client disconnected", code="client_disconnect"), 400)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(APIError(500, "internal server error"), metrics)

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_disconnect)
    app.add_exception_handler(Exception, unexpected)


def from_validation_errors(errors: list[dict[str, Any]]) -> APIError:
    """Pydantic's error list -> one message naming the first problem (and how many more there are)."""
    if not errors:
        return APIError(422, "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        return APIError(400, f"the request body is not valid JSON: {detail}", code="invalid_json")
    param = location(first.get("loc", ()))
    message = first.get("msg", "invalid value")
    if first.get("type") == "missing" and param is None:
        message = "the request body is empty or missing"
    elif first.get("type") == "extra_forbidden":
        message = "unknown field"
    text = f"{param}: {message}" if param else message
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return APIError(422, text, param=param)


MAX_NAME_CHARS = 40
"""Longest field name quoted back in an error; a client's unknown field may be megabytes long."""


def short_name(name: str) -> str:
    """A client's field name fit to quote back: at most `MAX_NAME_CHARS` characters."""
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 3] + "..."


def location(loc: Any) -> str | None:
    """('body', 'messages', 0, 'content') -> 'messages[0].content', each name cut by `short_name`."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")] if loc else []
    text = ""
    for part in parts:
        name = short_name(str(part))
        text += f"[{part}]" if isinstance(part, int) else (f".{name}" if text else name)
    return text or None


def from_http_exception(request: Request, exc: StarletteHTTPException) -> APIError:
    status = exc.status_code
    if status == 404 and exc.detail == "Not Found":
        message = f"{request.method} {request.url.path} is not a route of this server (see /openapi.json)"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return APIError(status, message, headers=dict(exc.headers) if exc.headers else None)
