"""Reading the body of `POST /v1/tasks/{task}`: JSON with a base64 image, or a form with an image file part.

One route takes both encodings, so the body is parsed here rather than by FastAPI's parameter machinery; the
same `TaskBody` model validates both and documents both in /openapi.json (`TASK_OPENAPI`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from biomedgpt.serve.http_errors import APIError, short_name
from biomedgpt.serve.payloads import image_bytes_from_field
from biomedgpt.serve.schemas import TaskBody
from biomedgpt.serve.types import RequestError

JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_task_body(request: Request, *, max_part_bytes: int) -> tuple[TaskBody, bytes]:
    """The validated body and the image bytes; 415 for other content types, 422/400 for bad bodies."""
    kind = media_type(request)
    if kind in JSON_TYPES or kind.endswith("+json"):
        body = await _read_json(request)
        if body.image is None:
            raise RequestError("the field 'image' is required (base64 or a data URL)", field="image")
        return body, image_bytes_from_field(body.image)
    if kind in FORM_TYPES:
        return await _read_form(request, max_part_bytes=max_part_bytes)
    shown = kind or "no Content-Type"
    raise APIError(415, f"unsupported content type ({shown}); send application/json or multipart/form-data")


async def _read_json(request: Request) -> TaskBody:
    raw = await request.body()
    if not raw.strip():
        raise APIError(422, "the request body is empty", code="empty_body")
    try:
        return TaskBody.model_validate_json(raw)
    except ValidationError as err:
        raise _as_request_validation(err) from None


async def _check_multipart_complete(request: Request) -> None:
    """400 for a multipart body without a boundary parameter or cut before its closing boundary.

    Starlette's parser stops quietly at the end of a truncated body, so the parts cut off would otherwise
    look like parts never sent ("the form needs an 'image' file part"). The body is read (and cached for the
    form parser) here; its size is bounded by the body limit.
    """
    params = request.headers.get("content-type", "").split(";")[1:]
    boundary = next(
        (p.split("=", 1)[1].strip().strip('"') for p in params if p.strip().startswith("boundary=")), ""
    )
    if not boundary:
        raise APIError(
            400, "the multipart/form-data Content-Type has no boundary parameter", code="malformed_body"
        )
    raw = await request.body()
    if b"--" + boundary.encode("latin-1", "replace") + b"--" not in raw:
        raise APIError(
            400,
            f"the multipart body is truncated or malformed: it has no closing boundary ({len(raw):,} bytes "
            "received); send the whole form",
            code="malformed_body",
        )


async def _read_form(request: Request, *, max_part_bytes: int) -> tuple[TaskBody, bytes]:
    if media_type(request) == "multipart/form-data":
        await _check_multipart_complete(request)
    try:
        form = await request.form(
            max_files=1, max_fields=len(TaskBody.model_fields) + 1, max_part_size=max_part_bytes
        )
    except (HTTPException, ClientDisconnect):
        raise  # Starlette's own 400s for malformed multipart, our 413/408, and a client gone mid-body
    except Exception as err:  # a malformed part and the like: the client's fault, never a 500
        raise APIError(400, f"the form data could not be parsed: {type(err).__name__}") from None
    fields: dict[str, Any] = {}
    image: bytes | None = None
    for key, value in form.multi_items():
        name = short_name(key)
        if key in fields or (key == "image" and image is not None):
            raise RequestError(f"the field {name!r} is given more than once", field=name)
        if key == "image":
            image = await value.read() if isinstance(value, UploadFile) else image_bytes_from_field(value)
        elif isinstance(value, UploadFile):
            raise RequestError(f"the field {name!r} must be a plain form field, not a file", field=name)
        else:
            fields[key] = value
    await form.close()
    try:
        body = TaskBody.model_validate(fields)
    except ValidationError as err:
        raise _as_request_validation(err) from None
    if image is None:
        raise RequestError("the form needs an 'image' file part", field="image")
    return body, image


def _as_request_validation(err: ValidationError) -> RequestValidationError:
    """Pydantic's errors in FastAPI's shape, so the handler words body and form errors alike."""
    errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in err.errors(include_url=False)]
    return RequestValidationError(errors)


TASK_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            # `image` is optional in the model only because a form sends it as a file part.
            "application/json": {"schema": {**TaskBody.model_json_schema(), "required": ["image"]}},
            "multipart/form-data": {
                "schema": {
                    **TaskBody.model_json_schema(),
                    "properties": {
                        **TaskBody.model_json_schema()["properties"],
                        "image": {"type": "string", "format": "binary", "description": "the image file"},
                    },
                    "required": ["image"],
                }
            },
        },
    }
}
