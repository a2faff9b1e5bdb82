"""What flows through the serving engines: requests, results and request errors (no torch, no web code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# What the tasks say about serving (`Task.served`, `Task.request_field`), named here for the HTTP layer.
from biomedgpt.tasks import REQUEST_FIELDS as TASK_FIELDS
from biomedgpt.tasks import SERVED_TASKS

__all__ = ["SERVED_TASKS", "TASK_FIELDS", "RequestError", "Sampling", "TaskRequest", "TaskResult"]


class RequestError(ValueError):
    """A request the server must refuse: `status` is the HTTP status (413 too large, 422 invalid, 404 unknown)."""

    def __init__(self, message: str, *, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """Sampling instead of greedy or beam search: temperature, then top-k, then top-p (nucleus); a seed makes
    the tokens reproducible."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


@dataclass(kw_only=True)
class TaskRequest:
    """One inference request, validated by the HTTP layer's schema but not yet by the engine."""

    task: str
    image: Image.Image | None
    """The image; None once prepared (`Prepared.pixels` holds what the model sees, so the upload is freed)."""
    orig_size: tuple[int, int] | None = None
    """(width, height) of the image as sent when `image` is a reduced copy of it (large uploads); None: its size."""
    fields: dict[str, str] = field(default_factory=dict)
    """The task's slot, under its `Task.request_field` name (`question`, `text`, `structure`)."""
    instruction: str | None = None
    """The user's own wording, used as the prompt instead of the task's template (chat completions)."""
    max_new_tokens: int | None = None
    num_beams: int | None = None
    closed_set: bool | None = None
    """Use the answer trie for closed-set tasks (default: yes when the model folder has answers)."""
    sampling: Sampling | None = None
    """Sample the answer (None: greedy, or beam search with `num_beams` > 1)."""


@dataclass
class TaskResult:
    task: str
    prompt: str
    output: dict[str, Any]
    """text | label + score | box | objects | mask (bool array at the input image's size)."""
    tokens: list[int]
    """Generated ids up to and including eos."""
    score: float
    """Sum of log-probabilities (greedy) or the length-normalised beam score."""

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)
