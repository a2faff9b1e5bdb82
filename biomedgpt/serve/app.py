"""The HTTP API: task endpoints, an OpenAI-compatible chat endpoint, probes and metrics.

    GET  /health                 live: the process answers (never needs the model)
    GET  /ready                  200 once the model is loaded, 503 before (or when loading failed)
    GET  /metrics                Prometheus text (needs the key when one is set, unless `metrics_public`)
    GET  /openapi.json           the schema (needs the key when one is set, unless `enable_docs`)
    GET  /docs, /redoc           interactive docs, only with `enable_docs` (they load scripts from a CDN)
    GET  /v1/models[/{id}]       OpenAI model list: `<model_id>` and `<model_id>:<task>` per served task
    POST /v1/tasks/{task}        JSON (base64 image) or multipart (image file part) -> structured output
    POST /v1/chat/completions    OpenAI chat.completion, text only or with one data-URL image; `stream` for SSE

`create_app(engine, config)` takes a loaded engine (tests, the demo); `create_app_from_config(config)` loads
it in a background thread, so the probes answer while a large model loads. An upload's header is read first
(size and decode cost, `images.py`); the image is then decoded and the request prepared in a bounded thread
pool within a budget of decoded bytes (`image_pool.py`), and decoded by the continuous batcher
(`continuous.py` over `scheduler.py`: requests join the running batch at any step), or with `batching:
request` by the request-level batcher (`batching.py`).
Every error is the JSON shape of `http_errors.py`; no client input yields a 5xx.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from biomedgpt import __version__
from biomedgpt.errors import UserError
from biomedgpt.serve.batching import Batcher, BatchFailed, Outcome, QueueFull
from biomedgpt.serve.config import ServeConfig
from biomedgpt.serve.continuous import ContinuousBatcher
from biomedgpt.serve.engine import Engine, Prepared
from biomedgpt.serve.http_errors import APIError, install_error_handlers
from biomedgpt.serve.image_pool import DecodeBusy, ImageDecodePool
from biomedgpt.serve.images import decode_image, read_header
from biomedgpt.serve.metrics import ServeMetrics
from biomedgpt.serve.middleware import (
    APIKeyMiddleware,
    BodyLimitMiddleware,
    ConnectionCapMiddleware,
    RequestMetricsMiddleware,
)
from biomedgpt.serve.openai_compat import (
    MAX_TOKENS_HEADER,
    ChoiceResult,
    chat_completion,
    chat_error_field,
    fit_prompt,
    model_card,
    model_ids,
    models_list,
    plan_chat,
    system_fingerprint,
)
from biomedgpt.serve.payloads import render_output
from biomedgpt.serve.scheduler import QueueFull as SchedulerFull
from biomedgpt.serve.schemas import ERROR_RESPONSES, ChatBody, check_text_lengths
from biomedgpt.serve.streaming import ChatStream, EventStreamResponse
from biomedgpt.serve.task_body import TASK_OPENAPI, media_type, read_task_body
from biomedgpt.serve.types import TASK_FIELDS, RequestError, TaskRequest

log = logging.getLogger(__name__)


@dataclass
class Served:
    """One answered request: its prepared form, its batch outcome and where the time went."""

    prepared: Prepared
    outcome: Outcome
    timing_ms: dict[str, float]
    eos_id: int

    @property
    def finished(self) -> bool:
        """True when decoding stopped on eos rather than on the token budget."""
        return self.outcome.result.tokens[-1:] == [self.eos_id]


@dataclass
class Ready:
    """A prepared request and when its preparation started and ended."""

    prepared: Prepared
    started: float
    prepared_at: float


class ServerState:
    """The engine (once loaded), the batcher and the metrics of one app."""

    def __init__(self, engine: Engine | None, config: ServeConfig, metrics: ServeMetrics) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.load_error: str | None = None
        self.created = int(time.time())
        on_batch = lambda size, seconds: metrics.observe_batch(size=size, seconds=seconds)  # noqa: E731
        self.batcher: Batcher[Prepared, Any] | ContinuousBatcher
        if config.batching == "continuous":
            self.batcher = ContinuousBatcher(
                lambda: self.engine,
                config.scheduler_limits(),
                on_queue_size=metrics.queue_size.set,
                on_batch=on_batch,
            )
        else:
            self.batcher = Batcher(
                self._run_batch,
                max_batch_size=config.max_batch_size,
                max_wait_ms=config.max_wait_ms,
                max_queue=config.max_queue,
                on_queue_size=metrics.queue_size.set,
                on_batch=on_batch,
            )
        metrics.model_ready.set(1 if engine is not None else 0)
        self.image_limits = config.image_limits()
        self.decoder = ImageDecodePool(workers=config.decode_workers, budget_bytes=config.max_decode_bytes)

    def _run_batch(self, items: list[Prepared]) -> list[Any]:
        assert self.engine is not None
        return self.engine.run(items)

    async def load(self, loader: Callable[[], Engine]) -> None:
        try:
            engine = await asyncio.to_thread(loader)
        except UserError as err:  # e.g. a file that does not match its manifest: the message says it all
            log.error("loading the model failed: %s", err)
            self.load_error = f"{type(err).__name__}: {err}"
            return
        except Exception as err:
            log.exception("loading the model failed")
            self.load_error = f"{type(err).__name__}: {err}"
            return
        self.engine = engine
        self.metrics.model_ready.set(1)
        log.info("model %s ready (%s engine)", engine.model_id, engine.name)

    def require_engine(self) -> Engine:
        if self.engine is not None:
            return self.engine
        if self.load_error is not None:
            raise APIError(503, "the model failed to load; see the server log", code="model_load_failed")
        raise APIError(503, "the model is still loading", code="model_loading", headers={"Retry-After": "5"})

    async def serve(self, image: bytes | None, **request: Any) -> Served:
        """`prepare` the request, then run it in a batch."""
        return await self.run(await self.prepare(image, **request))

    @property
    def busy(self) -> APIError:
        return APIError(
            503, "the server is busy; retry shortly", code="queue_full", headers={"Retry-After": "1"}
        )

    async def prepare(self, image: bytes | None, **request: Any) -> Ready:
        """Read the image's header, then decode it and prepare the request in the decode pool; without an image
        (text only) just prepare it."""
        engine = self.require_engine()
        started = time.perf_counter()
        limits = self.image_limits

        def prepare() -> Prepared:
            decoded = decode_image(image, limits)
            return engine.prepare(TaskRequest(image=decoded.image, orig_size=decoded.orig_size, **request))

        if self.batcher.queue_size + self.decoder.waiting >= self.config.max_queue:
            raise self.busy  # before spending any work on the image
        # The cheap checks first: prompt tokens, token budget and beams, then the image's header (413/422
        # before any pixel is decoded); only then the decode itself.
        await asyncio.to_thread(engine.plan, TaskRequest(image=None, **request))
        if image is None:
            prepared = await asyncio.to_thread(engine.prepare, TaskRequest(image=None, **request))
            return Ready(prepared, started, time.perf_counter())
        header = await asyncio.to_thread(read_header, image, limits)
        try:
            prepared = await self.decoder.run(
                header.decode_bytes, prepare, timeout_s=self.config.request_timeout_s
            )
        except DecodeBusy:
            raise APIError(
                503,
                "the server is busy decoding other images; retry shortly",
                code="decode_busy",
                headers={"Retry-After": "2"},
            ) from None
        return Ready(prepared, started, time.perf_counter())

    async def run(self, ready: Ready) -> Served:
        """Decode a prepared request in a batch and wait for its answer."""
        engine = self.require_engine()
        prepared = ready.prepared
        try:
            outcome = await asyncio.wait_for(self.batcher.submit(prepared), self.config.request_timeout_s)
        except QueueFull:
            raise self.busy from None
        except asyncio.TimeoutError:
            raise APIError(504, f"no answer within {self.config.request_timeout_s} s") from None
        except BatchFailed:
            raise APIError(500, "inference failed; see the server log", code="inference_failed") from None
        except RequestError:
            raise
        except ValueError as err:  # the scheduler's limits (rows, tokens in flight) refuse this request
            raise APIError(422, str(err), code="limit_exceeded") from None
        result = outcome.result
        self.observe(prepared, result)
        timing = {
            "prepare": (ready.prepared_at - ready.started) * 1000.0,
            "queue": outcome.queue_ms,
            "inference": outcome.inference_ms,
            "total": (time.perf_counter() - ready.started) * 1000.0,
        }
        return Served(
            prepared, outcome, {k: round(v, 3) for k, v in timing.items()}, eos_id=engine.special_ids.eos
        )

    def observe(self, prepared: Prepared, result: Any) -> None:
        self.metrics.observe_tokens(
            task=result.task, prompt=len(prepared.prompt_ids), generated=result.generated_tokens
        )


def create_app(
    engine: Engine | None, config: ServeConfig, *, loader: Callable[[], Engine] | None = None
) -> FastAPI:
    """The API over `engine`; with `engine=None`, `loader` runs in a background thread at startup."""
    metrics = ServeMetrics()
    state = ServerState(engine, config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.batcher.start()
        loading = asyncio.create_task(state.load(loader)) if engine is None and loader is not None else None
        try:
            yield
        finally:
            if loading is not None and not loading.done():
                loading.cancel()  # the loader thread itself cannot be stopped; its result is dropped
            await state.batcher.stop()
            state.decoder.shutdown()

    app = FastAPI(
        title="BiomedGPT API",
        version=__version__,
        description="Biomedical vision-language tasks and an OpenAI-compatible chat endpoint.",
        lifespan=lifespan,
        # The interactive docs load their scripts from a CDN: off unless asked for (`enable_docs`).
        docs_url="/docs" if config.enable_docs else None,
        redoc_url="/redoc" if config.enable_docs else None,
    )
    app.state.serve = state
    install_error_handlers(app, metrics)
    # Added innermost first: metrics see every response, the connection cap comes before the key check, and
    # the body limits apply after it.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=config.max_body_bytes,
        body_timeout_s=config.body_timeout_s,
        metrics=metrics,
    )
    app.add_middleware(
        APIKeyMiddleware, api_key=config.api_key, metrics=metrics, protected_paths=key_protected_paths(config)
    )
    app.add_middleware(ConnectionCapMiddleware, max_connections=config.max_connections, metrics=metrics)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    _add_probe_routes(app, state)
    _add_v1_routes(app, state)
    return app


def key_protected_paths(config: ServeConfig) -> list[str]:
    """The paths outside /v1 that need the key (when one is set): /metrics unless `metrics_public`, the OpenAPI
    schema unless `enable_docs` (the docs pages fetch it without a key). /health and /ready never do."""
    return [
        *([] if config.metrics_public else ["/metrics"]),
        *([] if config.enable_docs else ["/openapi.json"]),
    ]


def create_app_from_config(config: ServeConfig) -> FastAPI:
    """The API with the engine named in `config`, loaded in the background (/ready turns 200 when done)."""
    if config.model is None:
        raise ValueError("no model: set `model` (biomedgpt serve --model DIR)")

    def load() -> Engine:
        from biomedgpt.serve.engines import load_engine

        extra: dict = {"num_threads": config.num_threads} if config.num_threads else {}
        extra["verify"] = config.verify_files
        if config.engine == "onnxruntime":
            extra["precision"] = config.precision
        return load_engine(config.model, engine=config.engine, limits=config.engine_limits(), **extra)

    return create_app(None, config, loader=load)


def _add_probe_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health", tags=["probes"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Never touches the model."""
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"])
    async def ready() -> JSONResponse:
        """Readiness: 200 once the model is loaded, 503 while loading or after a failed load."""
        if state.engine is not None:
            engine = state.engine
            return JSONResponse(
                {
                    "status": "ready",
                    "model": engine.model_id,
                    "engine": engine.name,
                    "tasks": list(engine.tasks),
                }
            )
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "model": None}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/metrics", tags=["probes"])
    async def metrics() -> Response:
        """Prometheus text exposition."""
        state.metrics.queue_size.set(state.batcher.queue_size)
        state.metrics.decode_bytes.set(state.decoder.in_use)
        state.metrics.decode_waiting.set(state.decoder.waiting)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)


async def require_json(request: Request) -> None:
    kind = media_type(request)
    if kind != "application/json" and not kind.endswith("+json"):
        raise APIError(415, f"unsupported content type ({kind or 'no Content-Type'}); send application/json")


def _add_v1_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v1/models", tags=["openai"], responses=ERROR_RESPONSES)
    async def list_models() -> dict[str, Any]:
        """The served model ids: `<model_id>` (free instruction) and `<model_id>:<task>` per task."""
        engine = state.require_engine()
        return models_list(engine.model_id, engine.tasks, created=state.created)

    @app.get("/v1/models/{model:path}", tags=["openai"], responses=ERROR_RESPONSES)
    async def get_model(model: str) -> dict[str, Any]:
        engine = state.require_engine()
        if model not in model_ids(engine.model_id, engine.tasks):
            raise APIError(
                404, f"the model {model!r} is not served here", code="model_not_found", param="model"
            )
        return model_card(model, created=state.created)

    @app.post("/v1/tasks/{task}", tags=["tasks"], openapi_extra=TASK_OPENAPI, responses=ERROR_RESPONSES)
    async def run_task(task: str, request: Request) -> dict[str, Any]:
        """Run one task on one image; masks come as base64 PNG and/or COCO RLE."""
        engine = state.require_engine()
        if task not in engine.tasks:
            raise APIError(404, engine.unserved_task_message(task), param="task")
        body, image = await read_task_body(request, max_part_bytes=state.config.max_body_bytes)
        check_text_lengths(body, limit=state.config.max_text_chars)
        if body.stream:
            raise RequestError(
                f"this route does not stream; stream with /v1/chat/completions and the model "
                f"'{engine.model_id}:{task}'",
                status=400,
                field="stream",
            )
        fields = {}
        for name in sorted(set(TASK_FIELDS.values())):
            value = getattr(body, name)
            if value is not None and TASK_FIELDS.get(task) != name:
                raise RequestError(f"task {task} takes no field {name!r}", field=name)
            if value is not None:
                fields[name] = value
        served = await state.serve(
            image,
            task=task,
            fields=fields,
            instruction=body.prompt,
            max_new_tokens=body.max_new_tokens,
            num_beams=body.num_beams,
            closed_set=body.closed_set,
        )
        result = served.outcome.result
        # A mask at a large image's size takes a while to encode: off the event loop.
        output = await asyncio.to_thread(render_output, result.output, mask_format=body.mask_format)
        return {
            "task": task,
            "model": engine.model_id,
            "prompt": result.prompt,
            "output": output,
            "usage": {
                "prompt_tokens": len(served.prepared.prompt_ids),
                "completion_tokens": result.generated_tokens,
            },
            "timing_ms": served.timing_ms,
        }

    @app.post(
        "/v1/chat/completions",
        tags=["openai"],
        dependencies=[Depends(require_json)],
        responses={
            **ERROR_RESPONSES,
            200: {
                "description": "a `chat.completion`, or with `stream` server-sent `chat.completion.chunk` events",
                "content": {"application/json": {}, "text/event-stream": {}},
            },
        },
    )
    async def chat_completions(body: ChatBody) -> Response:
        """OpenAI chat completions, text only or with one `image_url` data-URL part, streamed or not; see
        `openai_compat.py` and `streaming.py`."""
        engine = state.require_engine()
        check_text_lengths(body, limit=state.config.max_text_chars)
        plan = plan_chat(body, model_id=engine.model_id, tasks=engine.tasks)
        try:
            # The oldest turns dropped until the prompt fits, then the budget clamped to what the model can give.
            dropped, checked = await asyncio.to_thread(
                fit_prompt, plan, lambda d: engine.plan(TaskRequest(image=None, **plan.request(d)))
            )
            budget = checked.max_new_tokens
            if plan.max_new_tokens is not None:
                budget = min(plan.max_new_tokens, checked.token_cap)
            ready = await state.prepare(plan.image, **plan.request(dropped, max_new_tokens=budget))
        except RequestError as err:
            message = err.message.replace("max_new_tokens", plan.max_tokens_param)
            raise RequestError(message, status=err.status, field=chat_error_field(err.field, plan)) from None
        prepared = ready.prepared
        items = [
            dataclasses.replace(
                prepared, request=dataclasses.replace(prepared.request, sampling=plan.choice_sampling(i))
            )
            for i in range(plan.n)
        ]
        headers = {MAX_TOKENS_HEADER: str(budget)}
        fingerprint = system_fingerprint(engine)
        render = partial(asyncio.to_thread, render_output, mask_format=body.mask_format)
        if plan.stream:
            stream = ChatStream(
                batcher=state.batcher,
                items=items,
                tokenizer=engine.tokenizer,
                eos=engine.special_ids.eos,
                task=plan.task,
                prompt=prepared.prompt,
                prompt_tokens=len(prepared.prompt_ids),
                model=body.model,
                fingerprint=fingerprint,
                stop=body.stop_strings,
                include_usage=plan.include_usage,
                timeout_s=state.config.request_timeout_s,
                max_tokens=budget,
                dropped_turns=dropped,
                render=lambda result: render(result.output),
                on_result=partial(state.observe, prepared),
            )
            try:
                await stream.open()
            except (QueueFull, SchedulerFull):
                raise state.busy from None
            except RequestError:
                raise
            except ValueError as err:  # the scheduler's limits (rows, tokens in flight) refuse this request
                raise APIError(422, str(err), code="limit_exceeded") from None
            return EventStreamResponse(stream.body(), headers=headers)
        runs = [asyncio.ensure_future(state.run(dataclasses.replace(ready, prepared=item))) for item in items]
        try:
            served = await asyncio.gather(*runs)
        finally:
            for run in runs:
                run.cancel()
        choices = [
            ChoiceResult(
                output=await render(s.outcome.result.output),
                completion_tokens=s.outcome.result.generated_tokens,
                finished=s.finished,
            )
            for s in served
        ]
        timing = dict(served[0].timing_ms)
        timing["total"] = max(s.timing_ms["total"] for s in served)
        completion = chat_completion(
            model=body.model,
            task=prepared.request.task,
            prompt=prepared.prompt,
            choices=choices,
            prompt_tokens=len(prepared.prompt_ids),
            timing_ms=timing,
            stop=body.stop_strings,
            fingerprint=fingerprint,
            max_tokens=budget,
            dropped_turns=dropped,
        )
        return JSONResponse(completion, headers=headers)
