"""Where the demo's answers come from: an engine in this process, or a BiomedGPT HTTP API.

Both implement `Backend`: `run(task, image, fields)` returns the engine's output dict (text; answer/label +
score; box; objects; mask as a bool array at the input size) and raises `RequestError` (the API's 4xx/5xx
included) for anything the user can fix or should be told about. The app never needs to know which it has.

For the tasks in its `streamed`, `stream(task, image, fields)` gives the answer's text as it is decoded: the
engine through a continuous-batching scheduler in a thread of its own, whose steps hand over their tokens; the
API through `/v1/chat/completions` with `stream: true` (server-sent events).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from biomedgpt.demo.client import ApiClient, ApiError, decode_png_mask
from biomedgpt.serve.types import SERVED_TASKS, TASK_FIELDS, RequestError, TaskRequest
from biomedgpt.tasks import get_task


def text_tasks(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `tasks` whose answer is text (`Task.text_output`), shown as it is decoded where the backend can
    stream it."""
    return tuple(t for t in tasks if get_task(t).text_output)


Update = tuple[str, dict[str, Any] | None]
"""What `stream` yields: (the answer's text so far, None) while decoding, then (its text, the whole output)."""


class Backend(Protocol):
    tasks: tuple[str, ...]
    """The tasks it serves, in `SERVED_TASKS` order; the demo shows one tab per task."""
    concurrency: int
    """How many requests may run at once: 1 for an in-process engine (one model, two cores), more for an API."""
    streamed: tuple[str, ...]
    """The tasks `stream` serves (text tasks); the others are answered whole by `run`."""

    def describe(self) -> str:
        """One line for the page header: what answers and which model."""
        ...

    def run(self, task: str, image: Image.Image, fields: dict[str, str]) -> dict[str, Any]:
        """The task's output for `image`; `RequestError` when refused."""
        ...

    def stream(self, task: str, image: Image.Image, fields: dict[str, str]) -> Iterator[Update]:
        """A task in `streamed`: its text so far after each decoding step, then the text and the whole output
        (as `run` gives it). Closing the iterator early stops the decoding."""
        ...


class EngineBackend:
    """An engine (`biomedgpt.serve.engine.Engine`) called in process: no server needed.

    Requests go to one continuous-batching scheduler (`biomedgpt.serve.scheduler.Scheduler`), started in a
    thread of its own with the first request; its steps hand each request's new tokens to `stream`, which
    decodes the tokens so far into text with the engine's tokenizer."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.concurrency = 1
        self.tasks: tuple[str, ...] = tuple(engine.tasks)
        self.streamed: tuple[str, ...] = text_tasks(self.tasks)
        self._scheduler: Any = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        info = self.engine.describe()
        return f"model `{info['model_id']}` on the {info['engine']} engine, in this process"

    def run(self, task: str, image: Image.Image, fields: dict[str, str]) -> dict[str, Any]:
        [(_, output)] = self._decode(task, image, fields, stream=False)  # no tokens asked for: one update
        assert output is not None
        return output

    def stream(self, task: str, image: Image.Image, fields: dict[str, str]) -> Iterator[Update]:
        return self._decode(task, image, fields, stream=True)

    def close(self) -> None:
        """Stop the scheduler's thread (a later request starts a new one)."""
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.stop()

    def _decode(
        self, task: str, image: Image.Image, fields: dict[str, str], *, stream: bool
    ) -> Iterator[Update]:
        from biomedgpt.serve.scheduler import QueueFull

        engine = self.engine
        item = engine.prepare(TaskRequest(task=task, image=image, fields=fields))
        events: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        job = engine.job(
            item, on_tokens=events.put if stream else None, on_done=lambda _job: events.put(None)
        )
        try:
            self._running_scheduler().submit(job)
        except QueueFull as err:
            raise RequestError(str(err), status=503) from None
        except ValueError as err:  # more rows or positions than the scheduler holds
            raise RequestError(str(err)) from None
        tokens: list[int] = []
        text = ""
        try:
            while (step := events.get()) is not None:
                tokens += step
                partial = engine.tokenizer.decode_text(tokens).strip()
                if partial != text:
                    text = partial
                    yield text, None
        finally:
            job.cancel()  # a no-op once it finished; the caller stopped early: free its rows
        if job.error is not None:
            raise job.error
        output = dict(engine.result(item, job).output)
        yield str(output.get("text", text)), output

    def _running_scheduler(self) -> Any:
        from biomedgpt.serve.scheduler import Scheduler, SchedulerLimits

        with self._lock:
            if self._scheduler is None:
                # Room for the largest request the engine accepts: its most beams, each with the longest
                # prompt (the decoder prefix) and the largest budget.
                limits = self.engine.limits
                defaults = SchedulerLimits()
                rows = max(defaults.max_rows, limits.max_beams)
                positions = limits.max_beams * (limits.max_prompt_tokens + limits.max_new_tokens)
                self._scheduler = Scheduler(
                    self.engine.step_model(),
                    SchedulerLimits(max_rows=rows, max_tokens=max(defaults.max_tokens, positions)),
                )
                self._scheduler.start()
            return self._scheduler


class ApiBackend:
    """A running `biomedgpt serve`; masks travel as PNG and come back as bool arrays.

    Text tasks stream through `/v1/chat/completions` (`stream: true`, the model pinned to the task); the chunk
    with the finish reason carries the parsed output (`biomedgpt.output`: a closed-set answer's probability).
    A server that refuses `stream` (one from before streaming) answers every task whole, through the task
    endpoints."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.concurrency = 4  # the server batches concurrent requests itself
        self.model_id, served = served_tasks([str(m.get("id", "")) for m in client.models()])
        self.tasks = tuple(t for t in SERVED_TASKS if t in served)
        self.streamed: tuple[str, ...] = text_tasks(self.tasks)
        self._can_stream = True

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

    def stream(self, task: str, image: Image.Image, fields: dict[str, str]) -> Iterator[Update]:
        if self._can_stream:
            text, output = "", None
            try:
                for chunk in self.client.chat_stream(
                    f"{self.model_id}:{task}", image, text=fields.get(TASK_FIELDS.get(task, ""), "")
                ):
                    extra = chunk.get("biomedgpt")
                    if isinstance(extra, dict) and isinstance(extra.get("output"), dict):
                        output = dict(extra["output"])
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            text += piece
                            yield text.strip(), None
            except ApiError as err:
                # Only a refusal of streaming itself, before any text, falls back to the whole answer.
                if text or err.status not in (400, 422) or "stream" not in err.message:
                    raise
                self._can_stream = False
            else:
                output = output or {"text": text.strip()}
                yield str(output.get("text", text.strip())), output
                return
        output = self.run(task, image, fields)
        yield str(output.get("text", "")), output


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
    from biomedgpt.serve.engines import load_engine

    return EngineBackend(load_engine(model, engine=engine, verify=verify))
