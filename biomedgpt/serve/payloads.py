"""Bytes in and JSON out: base64 and data-URL images, and engine outputs made JSON-safe (masks as PNG/RLE).

Engine outputs hold numpy arrays and floats that may be NaN; a response must never carry either, so every
output passes through `render_output`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from typing import Any

import numpy as np
from PIL import Image

from biomedgpt.eval.rle import mask_to_rle
from biomedgpt.serve.types import RequestError

_DATA_URL = re.compile(
    r"^data:(?P<media>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I
)


def decode_base64(text: str, *, field: str = "image", source: str | None = None) -> bytes:
    """Standard or URL-safe base64, whitespace and missing padding tolerated; 422 otherwise.

    `source` names what held the text in the error message (default: "the field '<field>'").
    """
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as err:
        reason = str(err).split(":", 1)[0] or "invalid characters or length"
        what = source or f"the field {field!r}"
        raise RequestError(f"{what} is not valid base64 ({reason})", field=field) from None


def image_bytes_from_url(url: str, *, field: str = "image") -> bytes:
    """The bytes of a `data:` URL; http(s) and other URLs are refused (the server fetches nothing)."""
    url = url.strip()
    if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I):
        raise RequestError(
            "remote images are not fetched; send the image inline as a data URL (data:image/png;base64,...)",
            field=field,
        )
    match = _DATA_URL.match(url)
    if not match:
        raise RequestError("the image URL must be a data URL: data:image/png;base64,...", field=field)
    if not match.group("b64"):
        raise RequestError("the image data URL must be base64 encoded (;base64,)", field=field)
    where = "the image data URL" if field == "image" else f"the image data URL in {field!r}"
    return decode_base64(url[match.end() :], field=field, source=f"the data of {where}")


def image_bytes_from_field(value: str, *, field: str = "image") -> bytes:
    """A JSON `image` field: a data URL or plain base64."""
    if value.lstrip()[:5].lower() == "data:" or "://" in value[:16]:
        return image_bytes_from_url(value, field=field)
    return decode_base64(value, field=field)


def mask_png_base64(mask: np.ndarray) -> str:
    """A bool (H, W) mask as a base64 8-bit grayscale PNG (0 background, 255 mask)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_mask(mask: np.ndarray, mask_format: str) -> dict[str, Any]:
    mask = np.asarray(mask, dtype=bool)
    rendered: dict[str, Any] = {"size": [int(mask.shape[0]), int(mask.shape[1])], "area": int(mask.sum())}
    if mask_format in ("png", "both"):
        rendered["png"] = mask_png_base64(mask)
    if mask_format in ("rle", "both"):
        rendered["rle"] = mask_to_rle(mask)
    return rendered


def render_output(output: dict[str, Any], *, mask_format: str = "png") -> dict[str, Any]:
    """An engine output as JSON-safe data: the mask rendered, numpy scalars and arrays as Python, NaN as null."""
    return {
        key: render_mask(value, mask_format) if key == "mask" and value is not None else jsonable(value)
        for key, value in output.items()
    }


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def content_text(task: str, rendered: dict[str, Any]) -> str:
    """The chat message text of an output: the answer for text tasks, compact JSON for structured ones."""
    for key in ("answer", "label", "text"):
        if isinstance(rendered.get(key), str):
            return rendered[key]
    if isinstance(rendered.get("mask"), dict):  # a mask task: the RLE, without the PNG
        shown = {k: v for k, v in rendered["mask"].items() if k != "png"}
        return json.dumps({"mask": shown}, separators=(",", ":"))
    return json.dumps(rendered, separators=(",", ":"))
