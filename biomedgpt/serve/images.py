"""Untrusted image bytes -> a verified RGB PIL image, with a decompression-bomb guard that reads the header only."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from biomedgpt.serve.types import RequestError


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode `data`; 422 for empty, non-image or corrupt bytes, 413 for more than `max_pixels` pixels.

    The size check happens on the header, before any pixel is decoded, so a PNG that declares 20000x20000
    costs nothing.
    """
    if not data:
        raise RequestError("the image is empty", field="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise RequestError(
                    f"the image has {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}",
                    status=413,
                    field="image",
                )
            image.load()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise RequestError(f"the image is too large: {err}", status=413, field="image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise RequestError(f"the image could not be decoded: {err}", field="image") from None
    if width < 1 or height < 1:
        raise RequestError("the image has no pixels", field="image")
    return image.convert("RGB")
