"""The OpenAI-compatible surface: chat messages -> one task request, results -> a `chat.completion` (or chunks).

Image: at most one, as an `image_url` part with a base64 data URL, in any message. Without one the request is
text only, as OFA runs text: the encoder sees the prompt with its image tokens masked. That serves the text
tasks (those whose answer is text: `Task.text_output`) and free instructions; tasks that answer with boxes or
masks need the image. The task is pinned by the model name (`<model_id>:vqa`) or the extra body field `task`; a
bare `<model_id>` means a free instruction, answered as open text (the task that `Task.answers_free_instructions`,
captioning, with the words as the prompt).

Messages -> prompt, one rule: the text of every system and developer message (in their order), then the
user and assistant turns before the last user message (in their order), then the last user message, joined
with spaces, without role labels (the model was trained on single prompts). Tool and function messages, and
anything after the last user message, are left out. When that prompt has more tokens than the server's
`max_prompt_tokens`, the oldest turns are dropped until it fits (`biomedgpt.dropped_turns` says how many);
system text and the last user message are never dropped, and if they alone do not fit the answer is 422. For a
pinned task with a prompt slot (vqa question, grounding phrase, segmentation structure) that text fills the
slot, so the prompt is the one the model was trained on; otherwise it is the instruction (none: the task's
own prompt).

Budget: `max_completion_tokens` (or `max_tokens`) must be at least 1; one above what the model can produce
(the server's `max_new_tokens`, and the decoder positions left) is clamped to it rather than refused. The
budget applied is `biomedgpt.max_tokens` and the `X-BiomedGPT-Max-Tokens` header; an answer it cut short has
finish_reason "length".

Decoding: greedy (or the model's beam search) unless sampling is asked for: `temperature` above 0, `top_p`
below 1 or `top_k` (an extension) above 0; `temperature` 0 (or `top_p` 0: only the likeliest token) is
greedy whatever the others say. `seed` makes sampling reproducible (the same seed, the same tokens). `n`
above 1 (at most `MAX_CHOICES`) samples n choices, choice i with seed `seed + i`; `n` above 1 without
sampling is a 400 naming `n` (greedy choices would all be the same). `tools`, `tool_choice`, `functions`, `function_call`, `logprobs`, `top_logprobs`, `response_format`
other than text, `reasoning_effort`, `reasoning`, `logit_bias`, `audio` and `modalities` other than text are
refused with a 400 naming the parameter; `presence_penalty`, `frequency_penalty`, `parallel_tool_calls`,
`metadata`, `store`, `service_tier` and `user` are accepted and ignored.

Output: structured outputs are rendered as JSON text in `content` and given parsed in the top-level
`biomedgpt` field. `stop` strings cut `content` before the first one found (finish_reason "stop"); a
non-streamed request decodes to its end all the same (`usage` counts every decoded token and `biomedgpt.output`
keeps the whole parsed output), while a stream stops decoding there. `system_fingerprint` names the engine,
its precision and the model files' hashes (manifest.json). Streaming: `streaming.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from biomedgpt.serve.payloads import content_text, image_bytes_from_url
from biomedgpt.serve.schemas import ChatBody, ChatMessage, ImagePart, TextPart
from biomedgpt.serve.types import TASK_FIELDS, RequestError, Sampling
from biomedgpt.tasks import free_instruction_task

MAX_CHOICES = 8
"""The most choices (`n`) one request may ask for."""
SEED_RANGE = 2**64
"""Seeds are taken modulo this (numpy's generators take non-negative seeds; OpenAI's may be negative)."""
MAX_TOKENS_HEADER = "X-BiomedGPT-Max-Tokens"

T = TypeVar("T")


@dataclass
class ChatPlan:
    """What a chat request asks of the engine, and how to name its parameters in errors."""

    task: str
    image: bytes | None
    slot: str | None = None
    """The task field the prompt text fills (vqa's question, ...); None: the text is the instruction."""
    system: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    """The user and assistant turns before the last user message, oldest first."""
    last: str = ""
    """The last user message's text."""
    max_new_tokens: int | None = None
    max_tokens_param: str = "max_tokens"
    num_beams: int | None = None
    closed_set: bool | None = None
    sampling: Sampling | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False

    def text(self, dropped: int = 0) -> str:
        """The prompt text with the `dropped` oldest turns left out (the module docstring's rule)."""
        return " ".join(t for t in [*self.system, *self.history[dropped:], self.last] if t)

    def request(self, dropped: int = 0, *, max_new_tokens: int | None = None) -> dict[str, Any]:
        """`TaskRequest` fields (all but the image) of this plan's prompt with `dropped` turns left out."""
        text = self.text(dropped)
        return {
            "task": self.task,
            "fields": {self.slot: text} if self.slot else {},
            "instruction": None if self.slot else (text or None),
            "max_new_tokens": max_new_tokens,
            "num_beams": self.num_beams,
            "closed_set": self.closed_set,
            "sampling": self.sampling,
        }

    def choice_sampling(self, index: int) -> Sampling | None:
        """Choice `index`'s sampling: seed `seed + index` (no seed: each choice draws its own)."""
        if self.sampling is None or self.sampling.seed is None:
            return self.sampling
        return dataclasses.replace(self.sampling, seed=(self.sampling.seed + index) % SEED_RANGE)


def model_ids(model_id: str, tasks: Sequence[str]) -> list[str]:
    return [model_id, *(f"{model_id}:{task}" for task in tasks)]


def models_list(model_id: str, tasks: Sequence[str], *, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(i, created=created) for i in model_ids(model_id, tasks)]}


def model_card(name: str, *, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "biomedgpt"}


def plan_chat(body: ChatBody, *, model_id: str, tasks: Sequence[str]) -> ChatPlan:
    """Validate what the engine cannot see (model name, refused parameters, n, sampling, images) and pick the
    task and the prompt's parts (the module docstring's rules)."""
    refuse_unsupported(body)
    task = _pinned_task(body, model_id=model_id, tasks=tasks)
    system, history, last = _conversation(body.messages)
    plan = ChatPlan(
        task=task or free_instruction_task(),
        image=_one_image(body.messages),
        slot=TASK_FIELDS.get(task or ""),
        system=system,
        history=history,
        last=last,
        num_beams=body.num_beams,
        closed_set=body.closed_set,
        sampling=_sampling(body),
        n=1 if body.n is None else body.n,
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
    if body.max_completion_tokens is not None:
        plan.max_new_tokens, plan.max_tokens_param = body.max_completion_tokens, "max_completion_tokens"
    elif body.max_tokens is not None:
        plan.max_new_tokens = body.max_tokens
    if plan.max_new_tokens is not None and plan.max_new_tokens < 1:
        raise RequestError(
            f"{plan.max_tokens_param} must be at least 1, got {plan.max_new_tokens}",
            field=plan.max_tokens_param,
        )
    if not 1 <= plan.n <= MAX_CHOICES:
        raise RequestError(f"n must be in 1..{MAX_CHOICES}, got {plan.n}", field="n")
    if plan.n > 1 and plan.sampling is None:
        raise RequestError(
            f"n={plan.n} needs sampling (temperature above 0): greedy decoding gives the same answer every time",
            status=400,
            field="n",
        )
    return plan


# (parameter, the values it may have here, why) for the OpenAI features this model has not.
_UNSUPPORTED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("tools", lambda v: not v, "tool calling is not supported by this model"),
    ("tool_choice", lambda v: v in (None, "none"), "tool calling is not supported by this model"),
    ("functions", lambda v: not v, "function calling is not supported by this model"),
    ("function_call", lambda v: v in (None, "none"), "function calling is not supported by this model"),
    ("logprobs", lambda v: not v, "log probabilities are not returned by this server"),
    ("top_logprobs", lambda v: not v, "log probabilities are not returned by this server"),
    (
        "response_format",
        lambda v: v is None or (isinstance(v, dict) and v.get("type") == "text"),
        'structured output is not supported; only {"type": "text"} is accepted',
    ),
    ("reasoning_effort", lambda v: v is None, "this model does not reason before it answers"),
    ("reasoning", lambda v: v is None, "this model does not reason before it answers"),
    ("logit_bias", lambda v: not v, "logit_bias is not supported by this server"),
    ("audio", lambda v: v is None, "this model answers in text only"),
    ("modalities", lambda v: v is None or v == ["text"], 'this model answers in text only; use ["text"]'),
)


def refuse_unsupported(body: ChatBody) -> None:
    """A 400 naming the first parameter asking for a feature this model has not (`_UNSUPPORTED`)."""
    for name, allowed, why in _UNSUPPORTED:
        if not allowed(getattr(body, name)):
            raise RequestError(f"{name}: {why}", status=400, field=name)


def _sampling(body: ChatBody) -> Sampling | None:
    """Sampling when temperature > 0, top_p < 1 or top_k > 0; else None (greedy). Temperature 0, or top_p 0
    (only the likeliest token), is greedy whatever the others say."""
    if body.temperature == 0 or body.top_p == 0:
        return None
    hot = body.temperature is not None and body.temperature > 0
    if not (hot or (body.top_p is not None and body.top_p < 1) or body.top_k):
        return None
    return Sampling(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        seed=None if body.seed is None else body.seed % SEED_RANGE,
    )


def fit_prompt(plan: ChatPlan, check: Callable[[int], T]) -> tuple[int, T]:
    """The fewest oldest turns to drop so that `check(dropped)` (the engine's `plan`) accepts the prompt, and
    what it returned. `check` raises `RequestError` with field "prompt" for a prompt with too many tokens;
    any other error, or a prompt too long with every turn dropped, is raised."""
    try:
        return 0, check(0)
    except RequestError as err:
        if err.field != "prompt" or not plan.history:
            raise
    low, high = 1, len(plan.history)
    best = high, check(high)  # raises when even the system text and the last message are too long
    while low < high:  # the smallest count that fits lies in [low, high]
        middle = (low + high) // 2
        try:
            best = middle, check(middle)
            high = middle
        except RequestError as err:
            if err.field != "prompt":
                raise
            low = middle + 1
    return best


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


def _one_image(messages: Sequence[ChatMessage]) -> bytes | None:
    """The bytes of the one image part; None when there is none (a text-only request)."""
    parts = [
        part
        for message in messages
        if isinstance(message.content, list)
        for part in message.content
        if isinstance(part, ImagePart)
    ]
    if not parts:
        return None
    if len(parts) > 1:
        raise RequestError(f"one image per request, got {len(parts)}", field="messages")
    url = parts[0].image_url if isinstance(parts[0].image_url, str) else parts[0].image_url.url
    return image_bytes_from_url(url, field="messages")


def _conversation(messages: Sequence[ChatMessage]) -> tuple[list[str], list[str], str]:
    """(system texts, the turns before the last user message, the last user message's text)."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise RequestError("the messages need a user message", field="messages")
    last = users[-1]
    system = [t for m in messages if m.role in ("system", "developer") and (t := _text(m))]
    history = [t for m in messages[:last] if m.role in ("user", "assistant") and (t := _text(m))]
    return system, history, _text(messages[last])


def _text(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    return " ".join(part.text.strip() for part in content if isinstance(part, TextPart)).strip()


@functools.lru_cache(maxsize=8)
def _fingerprint(model_dir: str, engine: str, precision: str) -> str:
    from biomedgpt.hashing import manifest_hashes

    try:
        files = manifest_hashes(model_dir) or {}
    except Exception:  # an unreadable manifest refused the load already; never fail a request on it
        files = {}
    if not files:  # no manifest (a checkpoint folder): the folder's name and serving settings
        serving = Path(model_dir) / "serving.json"
        files = {"folder": Path(model_dir).name, "serving": serving.read_text() if serving.is_file() else ""}
    digest = hashlib.sha256(json.dumps([engine, precision, files], sort_keys=True).encode()).hexdigest()
    return f"fp_{engine}_{precision}_{digest[:12]}"


def system_fingerprint(engine: Any) -> str:
    """`fp_<engine>_<precision>_<hash>`: the hash covers the model folder's manifest (each file's sha256), so a
    different model or precision gives a different fingerprint."""
    return _fingerprint(str(engine.model_dir), engine.name, getattr(engine, "precision", "fp32"))


@dataclass
class ChoiceResult:
    """One decoded choice: its rendered output, the tokens it took and whether it ended on eos."""

    output: dict[str, Any]
    completion_tokens: int
    finished: bool


def chat_completion(
    *,
    model: str,
    task: str,
    prompt: str,
    choices: Sequence[ChoiceResult],
    prompt_tokens: int,
    timing_ms: dict[str, float],
    stop: Sequence[str] = (),
    fingerprint: str,
    max_tokens: int,
    dropped_turns: int = 0,
) -> dict[str, Any]:
    """An OpenAI `chat.completion` object; each choice's `output` is already rendered (JSON-safe)."""
    rendered = []
    for index, choice in enumerate(choices):
        content, stopped = cut_at_stop(content_text(task, choice.output), stop)
        rendered.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "finish_reason": "stop" if choice.finished or stopped else "length",
                "logprobs": None,
            }
        )
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    extra: dict[str, Any] = {"task": task, "prompt": prompt, "output": choices[0].output}
    if len(choices) > 1:
        extra["outputs"] = [choice.output for choice in choices]
    extra.update(timing_ms=timing_ms, max_tokens=max_tokens, dropped_turns=dropped_turns)
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": rendered,
        "usage": usage(prompt_tokens, completion_tokens),
        "biomedgpt": extra,
    }


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's `usage`: the prompt counted once, the tokens of every choice."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
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
