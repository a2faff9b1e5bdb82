"""Where the demo's answers come from: an engine in this process, or a BiomedGPT HTTP API.

Both implement `Backend`: `run(task, image, fields)` returns the engine's output dict (text; answer/label +
score; box; objects; mask as a bool array at the input size) and raises `RequestError` (the API's 4xx/5xx
included) for anything the user can fix or should be told about. The app never needs to know which it has.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from biomedgpt.demo.client import ApiClient, ApiError, decode_png_mask
from biomedgpt.serve.types import SERVED_TASKS, TaskRequest


class Backend(Protocol):
    tasks: tuple[str, ...]
    """The tasks it serves, in `SERVED_TASKS` order; the demo shows one tab per task."""
    concurrency: int
    """How many requests may run at once: 1 for an in-process engine (one model, two cores), more for an API."""

    def describe(self) -> str:
        """One line for the page header: what answers and which model."""
        ...

    def run(self, task: str, image: Image.Image, fields: dict[str, str]) -> dict[str, Any]:
        """The task's output for `image`; `RequestError` when refused."""
        ...


class EngineBackend:
    """An engine (`biomedgpt.serve.engine.Engine`) called in process: no server needed."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.concurrency = 1
        self.tasks: tuple[str, ...] = tuple(engine.tasks)

    def describe(self) -> str:
        info = self.engine.describe()
        return f"model `{info['model_id']}` on the {info['engine']} engine, in this process"

    def run(self, task: str, image: Image.Image, fields: dict[str, str]) -> dict[str, Any]:
        return dict(self.engine(TaskRequest(task=task, image=image, fields=fields)).output)


class ApiBackend:
    """A running `biomedgpt serve`; masks travel as PNG and come back as bool arrays."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.concurrency = 4  # the server batches concurrent requests itself
        self.model_id, served = served_tasks([str(m.get("id", "")) for m in client.models()])
        self.tasks = tuple(t for t in SERVED_TASKS if t in served)

    def describe(self) -> str:
        return f"model `{self.model_id}` behind the API at {self.client.base_url}"

    def run(self, task: str, image: Image.Image, fields: dict[str, str]) -> dict[str, Any]:
        body = self.client.run_task(task, image, fields=fields)
        output = dict(body.get("output") or {})
        rendered = output.get("mask")
        if isinstance(rendered, dict):  # {"size": [h, w], "area": n, "png": base64}
            if "png" not in rendered:
                raise ApiError("the API sent a mask without its PNG", status=502)
            mask = np.asarray(decode_png_mask(rendered["png"]).convert("L")) > 0
            if mask.shape != (image.height, image.width):
                raise ApiError(
                    f"the API sent a {mask.shape} mask for a {image.width}x{image.height} image", status=502
                )
            output["mask"] = mask
        return output


def served_tasks(model_ids: list[str]) -> tuple[str, tuple[str, ...]]:
    """`GET /v1/models` ids (`<model_id>` plus `<model_id>:<task>` per task) -> (model_id, tasks)."""
    if not model_ids:
        raise ApiError("the API lists no models", status=502)
    base = min(model_ids, key=len)
    tasks = tuple(i[len(base) + 1 :] for i in model_ids if i.startswith(base + ":"))
    return base, tasks or SERVED_TASKS


def wait_until_ready(client: ApiClient, *, wait_s: float, poll_s: float = 1.0) -> None:
    """Poll `/ready` for up to `wait_s` seconds: a server loads its model after it starts listening."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.check_ready()
            return
        except ApiError as err:  # unreachable or still loading: worth waiting for; anything else is not
            if err.status not in (502, 503, 504) or time.monotonic() >= deadline:
                raise
        time.sleep(poll_s)


def load_backend(
    *,
    model: str | Path | None = None,
    engine: str = "onnxruntime",
    api: str | None = None,
    api_key: str | None = None,
    wait_s: float = 0.0,
    verify: bool = True,
) -> Backend:
    """Exactly one of `model` (a model or export folder, loaded with `engine`; `verify`: its files checked
    against its manifest.json first) or `api` (a server's address, waited for up to `wait_s` seconds)."""
    if (model is None) == (api is None):
        raise ValueError("give exactly one of a model folder or an API address")
    if api is not None:
        client = ApiClient(api, api_key=api_key)
        wait_until_ready(client, wait_s=wait_s)
        return ApiBackend(client)
    from biomedgpt.serve.engine import load_engine

    return EngineBackend(load_engine(model, engine=engine, verify=verify))
