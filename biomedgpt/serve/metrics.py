"""Prometheus metrics of one server: a `CollectorRegistry` per app, so several apps (tests) never share counters.

Labels are bounded: routes are route templates (`/v1/tasks/{task}`, else "other"), never raw paths, and methods
are the standard ones (else "other"): a scanner sending random URLs or methods must not grow the label set.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
DISCONNECTED_STATUS = 499
"""The status label of a request whose client went away before the response (nginx's convention)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def method_label(method: str) -> str:
    """`method` if it is a standard HTTP method, else "other"."""
    return method if method in KNOWN_METHODS else "other"


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServeMetrics:
    """The server's counters, gauges and histograms, all prefixed `biomedgpt_`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "biomedgpt_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "biomedgpt_request_latency_seconds",
            "Time from request to the end of the response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "biomedgpt_request_errors", "Requests answered with an error, by error code", ["code"], registry=r
        )
        self.queue_size = Gauge("biomedgpt_queue_size", "Requests waiting for the engine", registry=r)
        self.batch_size = Histogram(
            "biomedgpt_batch_size", "Requests per engine call", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "biomedgpt_batch_latency_seconds", "Time of one engine call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.prompt_tokens = Counter(
            "biomedgpt_prompt_tokens", "Prompt tokens of answered requests", ["task"], registry=r
        )
        self.generated_tokens = Counter(
            "biomedgpt_generated_tokens", "Tokens generated for answered requests", ["task"], registry=r
        )
        self.model_ready = Gauge("biomedgpt_model_ready", "1 once the model is loaded", registry=r)
        self.decode_bytes = Gauge(
            "biomedgpt_image_decode_bytes", "Decoded image bytes reserved by decodes in progress", registry=r
        )
        self.decode_waiting = Gauge(
            "biomedgpt_image_decode_waiting", "Image decodes waiting for the decode budget", registry=r
        )

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method_label(method), status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, *, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def observe_tokens(self, *, task: str, prompt: int, generated: int) -> None:
        self.prompt_tokens.labels(task=task).inc(prompt)
        self.generated_tokens.labels(task=task).inc(generated)

    def render(self) -> bytes:
        return generate_latest(self.registry)
