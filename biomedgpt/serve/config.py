"""`ServeConfig`: everything `biomedgpt serve` needs, from defaults, YAML, the environment and the command line.

Precedence (later wins): field defaults < `-c` YAML files < `BIOMEDGPT_SERVE_<FIELD>` environment variables <
`KEY=VALUE` overrides and flags. Environment variables let a container set any field without a config file
(`serving/` and `k8s/` use them); the API key may also come from `BIOMEDGPT_API_KEY`. A bad value
names the variable it came from. Light on purpose: no torch, no web code.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from biomedgpt.config import (
    ConfigError,
    check,
    from_dict,
    load_yaml,
    merge_dicts,
    parse_override,
    parse_yaml,
    set_dotted,
    to_dict,
)

ENV_PREFIX = "BIOMEDGPT_SERVE_"
API_KEY_ENV = "BIOMEDGPT_API_KEY"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(kw_only=True)
class ServeConfig:
    """The HTTP server: where it listens, which model it serves, and what one request may ask for."""

    model: Path | None = None
    """Model folder: an export folder (engine onnxruntime) or a checkpoint / model folder (engine torch)."""
    engine: Literal["onnxruntime", "torch"] = "onnxruntime"
    """Inference backend; ONNX Runtime needs no torch in the serving image."""
    precision: Literal["fp32", "int8"] = "fp32"
    """ONNX Runtime graphs to load: fp32, or the int8 ones `biomedgpt export --int8` kept (engine onnxruntime only)."""
    verify_files: bool = True
    """Check every model file the engine reads against the sha256 in the folder's manifest.json before loading
    (hashed once, streaming); a file that differs or is missing refuses to start. An export folder must have the
    manifest; a checkpoint folder is checked where it has one. `--no-verify` turns it off."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback needs `api_key` (or `allow_no_key`)."""
    port: int = 8000
    """TCP port to bind."""
    api_key: str | None = None
    """Key every /v1 request must send (`Authorization: Bearer KEY` or `x-api-key`); null = open.
    Prefer the environment (BIOMEDGPT_API_KEY) over a file or a flag: flags show up in `ps`."""
    allow_no_key: bool = False
    """Bind a non-loopback host without an API key (behind an authenticating proxy, say)."""
    enable_docs: bool = False
    """Serve the interactive docs at /docs and /redoc, and /openapi.json without the key. Off by default: those
    pages load swagger-ui and redoc from a CDN. Off, /openapi.json needs the key like /v1 (when a key is set)."""
    metrics_public: bool = False
    """Serve /metrics without the key (for a scraper that cannot send one). Off, /metrics needs the key when a
    key is set; /health and /ready never need it."""
    batching: Literal["continuous", "request"] = "continuous"
    """continuous: requests join the running decode batch at any step and leave it the step they finish
    (`max_running`, `max_tokens_in_flight`); request: requests arriving together are decoded as one batch until
    its longest ends (`max_batch_size`, `max_wait_ms`)."""
    max_running: int = 32
    """continuous: most decoder rows running at once (a beam-search request holds one per beam)."""
    max_tokens_in_flight: int = 16384
    """continuous: most decoder positions reserved by running requests (rows x (prefix + max new tokens))."""
    max_batch_size: int = 8
    """request: most requests decoded together in one engine call."""
    max_wait_ms: float = 5.0
    """request: how long the batcher waits after the first request of a batch for others to join it."""
    max_queue: int = 256
    """Requests waiting for the engine; beyond that the server answers 503 with Retry-After."""
    max_body_bytes: int = 10 * 1024 * 1024
    """Largest request body (checked on Content-Length and while reading); larger answers 413."""
    max_image_pixels: int = 40_000_000
    """Images with more pixels answer 413 (checked on the header, before decoding). Values above Pillow's own
    bomb limit (about 89 M) take effect: uploads are opened without Pillow's global check."""
    max_decode_bytes: int = 512 * 1024 * 1024
    """Budget of decoded image bytes held by all decodes at once (estimated from each header); a decode waits
    for its share, and one image that alone needs more answers 413."""
    decode_workers: int = 2
    """Threads decoding ordinary uploads; large ones (over 64 MiB decoded) have one thread of their own."""
    image_working_side: int = 2048
    """Uploads with a longer side of at least twice this are reduced to at least this while decoding (JPEG at a
    smaller DCT scale): the model sees a few hundred pixels, so nothing larger is kept in memory."""
    max_text_chars: int = 20_000
    """Characters of one text field or chat message; longer answers 422 before it is tokenized."""
    max_connections: int = 64
    """Open connections served at once; a request on a connection beyond that answers 503 and is closed."""
    header_timeout_s: float = 10.0
    """Time a connection has to send a request's line and headers (from opening, or from the previous
    response); then it is closed (408 if it had sent part of them)."""
    body_timeout_s: float = 30.0
    """Time a request has to send its whole body once its headers are in; then it answers 408 and is closed."""
    keep_alive_timeout_s: float = 8.0
    """An idle keep-alive connection is closed after this long without a new request. Longer than the 5 s after
    which httpx (and the openai client on it) drops an idle pooled connection: at equal timeouts the server can
    close a connection just as the client reuses it, and the client reads "Server disconnected without sending a
    response"."""
    max_prompt_tokens: int = 256
    """Prompt tokens (with <s> and </s>); longer prompts answer 422."""
    max_new_tokens: int = 1024
    """Largest `max_new_tokens` / `max_tokens` a request may ask for; larger answers 422."""
    max_beams: int = 8
    """Largest `num_beams` a request may ask for."""
    num_threads: int | None = None
    """Intra-op threads of the engine (ONNX Runtime or torch); null = the backend's default."""
    request_timeout_s: float = 60.0
    """A request not answered within this time gets 504 (it is dropped from the queue if still waiting)."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """uvicorn's log level."""

    def __post_init__(self) -> None:
        check(bool(self.host.strip()), "host", "must not be empty")
        check(1 <= self.port <= 65535, "port", f"must be in 1..65535, got {self.port}")
        check(self.api_key is None or bool(self.api_key.strip()), "api_key", "must not be empty (use null)")
        for name in (
            "max_batch_size",
            "max_running",
            "max_queue",
            "max_body_bytes",
            "max_image_pixels",
            "max_decode_bytes",
            "decode_workers",
            "max_text_chars",
            "max_connections",
        ):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(
            self.image_working_side >= 64,
            "image_working_side",
            f"must be >= 64, got {self.image_working_side}",
        )
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_timeout_s"):
            check(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        for name in ("max_prompt_tokens", "max_new_tokens", "max_beams"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(
            self.precision == "fp32" or self.engine == "onnxruntime",
            "precision",
            "int8 graphs are served by the onnxruntime engine only",
        )
        check(self.max_wait_ms >= 0, "max_wait_ms", f"must be >= 0, got {self.max_wait_ms}")
        check(
            self.max_running >= self.max_beams,
            "max_running",
            f"must be >= max_beams ({self.max_beams}): a beam-search request holds one row per beam",
        )
        check(
            self.max_tokens_in_flight >= self.max_new_tokens,
            "max_tokens_in_flight",
            f"must be >= max_new_tokens ({self.max_new_tokens}), got {self.max_tokens_in_flight}",
        )
        check(self.request_timeout_s > 0, "request_timeout_s", f"must be > 0, got {self.request_timeout_s}")
        check(
            self.num_threads is None or self.num_threads >= 1,
            "num_threads",
            f"must be >= 1 or null, got {self.num_threads}",
        )

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    def engine_limits(self) -> Any:
        """The `EngineLimits` these settings imply."""
        from biomedgpt.serve.engine import EngineLimits

        return EngineLimits(
            max_prompt_tokens=self.max_prompt_tokens,
            max_new_tokens=self.max_new_tokens,
            max_image_pixels=self.max_image_pixels,
            max_beams=self.max_beams,
        )

    def scheduler_limits(self) -> Any:
        """The continuous batcher's `SchedulerLimits` these settings imply."""
        from biomedgpt.serve.scheduler import SchedulerLimits

        return SchedulerLimits(
            max_rows=self.max_running, max_tokens=self.max_tokens_in_flight, max_queue=self.max_queue
        )

    def image_limits(self) -> Any:
        """The `ImageLimits` these settings imply (the API and the demo decode uploads with them)."""
        from biomedgpt.serve.images import ImageLimits

        return ImageLimits(
            max_pixels=self.max_image_pixels,
            max_decode_bytes=self.max_decode_bytes,
            working_side=self.image_working_side,
        )

    def redacted(self) -> dict[str, Any]:
        """Plain data for logs and `--dump-config`, with the API key hidden."""
        data = to_dict(self)
        if data["api_key"] is not None:
            data["api_key"] = "***"
        return data


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def config_from_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ServeConfig fields set in `environ` -> (values, {field: "VARIABLE=value" for error messages}).

    Empty variables count as unset (the usual shell convention). String fields take the text as is (an API
    key of digits stays a string); the others are read as YAML scalars (`8`, `0.5`, `true`, `null`).
    """
    hints = typing.get_type_hints(ServeConfig)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in dataclasses.fields(ServeConfig):
        name = env_name(field.name)
        raw = environ.get(name, "")
        if field.name == "api_key":
            name, raw = _api_key_from_env(environ)
        if not raw.strip():
            continue
        if _takes_text(hints[field.name]):
            values[field.name] = raw
        else:
            try:
                values[field.name] = parse_yaml(raw, source=name)
            except ConfigError as err:
                raise ConfigError(f"{name}={raw!r}: {err.message}") from None
        # Never echo a secret back in an error message.
        sources[field.name] = name if field.name == "api_key" else f"{name}={raw!r}"
    return values, sources


def _api_key_from_env(environ: Mapping[str, str]) -> tuple[str, str]:
    serve_key, plain_key = environ.get(env_name("api_key"), ""), environ.get(API_KEY_ENV, "")
    if serve_key and plain_key and serve_key != plain_key:
        raise ConfigError(f"{env_name('api_key')} and {API_KEY_ENV} are both set and differ; set one of them")
    if serve_key:
        return env_name("api_key"), serve_key
    return API_KEY_ENV, plain_key


def _takes_text(tp: Any) -> bool:
    """True for `str`, `str | None` and `Path | None`: the environment's text is the value itself."""
    args = typing.get_args(tp) or (tp,)
    return any(a in (str, Path) for a in args)


def load_serve_config(
    files: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> ServeConfig:
    """Defaults < `files` < environment (`os.environ` unless given) < `overrides` ("port=9000") < `flags`.

    `flags` are the command line's explicit options (None values are skipped). Errors are `ConfigError`;
    a bad environment value names its variable.
    """
    data: dict[str, Any] = {}
    for file in files:
        data = merge_dicts(data, load_yaml(file))
    env_values, env_sources = config_from_env(os.environ if environ is None else environ)
    data = merge_dicts(data, env_values)
    for text in overrides:
        key, value = parse_override(text)
        data = set_dotted(data, key, value)
        env_sources.pop(key, None)
    for key, value in (flags or {}).items():
        if value is not None:
            data[key] = value
            env_sources.pop(key, None)
    try:
        return from_dict(ServeConfig, data)
    except ConfigError as err:
        if err.key in env_sources:
            raise ConfigError(f"{env_sources[err.key]}: {err.message}") from None
        raise
