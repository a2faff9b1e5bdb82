"""The OpenAI-compatible surface: chat messages -> one task request, a result -> a `chat.completion`.

Mapping (DESIGN 6): exactly one image, as an `image_url` part with a base64 data URL. The task is pinned by the
model name (`<model_id>:vqa`) or the extra body field `task`; a bare `<model_id>` means a free instruction,
answered as open text (task "caption" with the user's words as the prompt). For a pinned task with a prompt
slot (vqa question, grounding phrase, segmentation structure) the user's text fills that slot, so the prompt
is the one the model was trained on; for the other pinned tasks the text, if any, is the instruction.
Structured outputs are rendered as JSON text in `content` and given parsed in the top-level `biomedgpt` field.
`stop` strings cut `content` before the first one found (finish_reason "stop"); decoding itself is not cut short,
so `usage` counts every decoded token and `biomedgpt.output` keeps the whole parsed output.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from biomedgpt.serve.payloads import content_text, image_bytes_from_url
from biomedgpt.serve.schemas import ChatBody, ChatMessage, ImagePart, TextPart
from biomedgpt.serve.types import TASK_FIELDS, RequestError

FREE_TASK = "caption"


@dataclass
class ChatPlan:
    """What a chat request asks of the engine, and how to name its parameters in errors."""

    task: str
    image: bytes
    fields: dict[str, str] = field(default_factory=dict)
    instruction: str | None = None
    max_new_tokens: int | None = None
    max_tokens_param: str = "max_tokens"


def model_ids(model_id: str, tasks: Sequence[str]) -> list[str]:
    return [model_id, *(f"{model_id}:{task}" for task in tasks)]


def models_list(model_id: str, tasks: Sequence[str], *, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(i, created=created) for i in model_ids(model_id, tasks)]}


def model_card(name: str, *, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "biomedgpt"}


def plan_chat(body: ChatBody, *, model_id: str, tasks: Sequence[str]) -> ChatPlan:
    """Validate what the engine cannot see (model name, stream, n, images) and pick the task and prompt."""
    if body.stream:
        raise RequestError("streaming is not supported; set stream to false", field="stream")
    if body.n is not None and body.n != 1:
        raise RequestError(f"only n=1 is supported, got {body.n}", field="n")
    task = _pinned_task(body, model_id=model_id, tasks=tasks)
    image = _one_image(body.messages)
    text = _user_text(body.messages)
    plan = ChatPlan(task=task or FREE_TASK, image=image)
    slot = TASK_FIELDS.get(task or "")
    if slot:
        plan.fields[slot] = text
    else:
        plan.instruction = text or None
    if body.max_completion_tokens is not None:
        plan.max_new_tokens, plan.max_tokens_param = body.max_completion_tokens, "max_completion_tokens"
    elif body.max_tokens is not None:
        plan.max_new_tokens = body.max_tokens
    return plan


def _pinned_task(body: ChatBody, *, model_id: str, tasks: Sequence[str]) -> str | None:
    # Compare against the id itself rather than splitting on ":": a model id may contain one.
    sep = body.model.startswith(model_id + ":")
    suffix = body.model[len(model_id) + 1 :] if sep else ""
    if body.model != model_id and not sep:
        raise RequestError(
            f"the model {body.model!r} is not served here; the models are: {', '.join(model_ids(model_id, tasks))}",
            status=404,
            field="model",
        )
    if sep and suffix not in tasks:
        raise RequestError(
            f"the model {body.model!r} names an unknown task; this model serves: {', '.join(tasks)}",
            status=404,
            field="model",
        )
    pinned = suffix if sep else None
    if body.task is not None:
        if body.task not in tasks:
            raise RequestError(
                f"unknown task {body.task!r}; this model serves: {', '.join(tasks)}", field="task"
            )
        if pinned is not None and pinned != body.task:
            raise RequestError(
                f"the model pins task {pinned!r} but the body asks for {body.task!r}", field="task"
            )
        pinned = body.task
    return pinned


def _one_image(messages: Sequence[ChatMessage]) -> bytes:
    parts = [
        part
        for message in messages
        if isinstance(message.content, list)
        for part in message.content
        if isinstance(part, ImagePart)
    ]
    if not parts:
        raise RequestError(
            "one image is required, as an image_url content part with a data URL", field="messages"
        )
    if len(parts) > 1:
        raise RequestError(f"one image per request, got {len(parts)}", field="messages")
    url = parts[0].image_url if isinstance(parts[0].image_url, str) else parts[0].image_url.url
    return image_bytes_from_url(url, field="messages")


def _user_text(messages: Sequence[ChatMessage]) -> str:
    """The text of the last user message (the model is single-turn: earlier turns cannot condition it)."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise RequestError("the messages need a user message", field="messages")
    content = users[-1].content
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    return " ".join(part.text.strip() for part in content if isinstance(part, TextPart)).strip()


def chat_completion(
    *,
    model: str,
    task: str,
    prompt: str,
    output: dict[str, Any],
    prompt_tokens: int,
    completion_tokens: int,
    finished: bool,
    timing_ms: dict[str, float],
    stop: Sequence[str] = (),
) -> dict[str, Any]:
    """An OpenAI `chat.completion` object; `output` is already rendered (JSON-safe)."""
    content, stopped = cut_at_stop(content_text(task, output), stop)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop" if finished or stopped else "length",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "biomedgpt": {"task": task, "prompt": prompt, "output": output, "timing_ms": timing_ms},
    }


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest occurrence of any of `stop` (excluded), and whether one was found."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def chat_error_field(field: str | None, plan: ChatPlan) -> str | None:
    """An engine error's field in chat terms: the prompt and image come from `messages`."""
    if field == "max_new_tokens":
        return plan.max_tokens_param
    if field in ("image", "instruction", "prompt", *TASK_FIELDS.values()):
        return "messages"
    return field
