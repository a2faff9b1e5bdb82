"""Request bodies of the HTTP API as pydantic models: they validate input and document it in /openapi.json.

Unknown fields are errors (a typo such as `max_new_token` must not be silently ignored); the chat body accepts
the OpenAI parameters a client commonly sends. `temperature`, `top_p`, `top_k` (an extension) and `seed` choose
sampling (`openai_compat.py`); `presence_penalty` and `frequency_penalty` are checked against OpenAI's ranges (a
value outside answers 422 naming the parameter) and otherwise ignored. `stop` is applied: the answer is cut
before the first stop string. Features this model has not (`tools`, `logprobs`, `response_format` other than
text, `reasoning_effort`, ...) are accepted by the schema so that `openai_compat.refuse_unsupported` can answer
a 400 naming them. Text lengths are checked by the app against `ServeConfig.max_text_chars`
(`check_text_lengths`), so the limit is configurable and its message names it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from biomedgpt.serve.types import RequestError

MaskFormat = Literal["png", "rle", "both"]
TextField = Annotated[str | None, Field(default=None)]
TASK_TEXT_FIELDS = ("question", "text", "structure", "prompt")


class TaskBody(BaseModel):
    """`POST /v1/tasks/{task}`: JSON, or multipart/form-data with the image as a file part."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(
        default=None, description="base64 image bytes or a data URL (JSON); in multipart, a file part `image`"
    )
    question: TextField = Field(default=None, description="vqa: the question")
    text: TextField = Field(default=None, description="grounding: the phrase to locate")
    structure: TextField = Field(default=None, description="segmentation: what to segment")
    prompt: TextField = Field(default=None, description="your own instruction instead of the task's prompt")
    max_new_tokens: int | None = Field(default=None, description="generation budget (default: the model's)")
    num_beams: int | None = Field(default=None, description="beam width (1 = greedy)")
    closed_set: bool | None = Field(
        default=None, description="restrict vqa/classification answers to the model's answer list"
    )
    mask_format: MaskFormat = Field(
        default="png", description="segmentation masks as base64 PNG, COCO RLE or both"
    )
    stream: bool | None = Field(
        default=None,
        description="not on this route: true answers 400; stream with /v1/chat/completions (`<model_id>:<task>`)",
    )


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="a data URL: data:image/png;base64,... (remote URLs are not fetched)")
    detail: str | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"]
    image_url: ImageURL | str


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


MAX_STOP_STRINGS = 4
"""OpenAI's limit on `stop` strings."""


def in_range(low: float, high: float) -> AfterValidator:
    """A validator of an optional number in [low, high] whose error names the range (NaN is outside it)."""

    def check(value: float | None) -> float | None:
        if value is not None and not low <= value <= high:
            # The message is the template: pydantic fills "{name}" fields from the context, and there are none.
            raise PydanticCustomError(
                "out_of_range", f"must be between {low:g} and {high:g} (OpenAI's range), got {value:g}"
            )
        return value

    return AfterValidator(check)


def ranged(low: float, high: float, description: str) -> Any:
    """The field of an optional float in [low, high] (checked by `in_range`), its range shown in the schema."""
    return Field(default=None, description=description, json_schema_extra={"minimum": low, "maximum": high})


IGNORED = "accepted in OpenAI's range and ignored"
UNSUPPORTED = "not supported by this model: any value but the default answers 400 naming the parameter"
Temperature = Annotated[float | None, in_range(0.0, 2.0)]
TopP = Annotated[float | None, in_range(0.0, 1.0)]
Penalty = Annotated[float | None, in_range(-2.0, 2.0)]
StopList = Annotated[list[str], Field(min_length=1, max_length=MAX_STOP_STRINGS)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool | None = Field(
        default=None, description="a last chunk with `usage` (and no choices) before `data: [DONE]`"
    )


class ChatMessage(BaseModel):
    # History messages may carry fields of other features (tool calls, refusals): they are ignored.
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatBody(BaseModel):
    """`POST /v1/chat/completions`, the OpenAI request body plus a few BiomedGPT fields."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        max_length=256, description="`<model_id>` (free instruction) or `<model_id>:<task>` (see /v1/models)"
    )
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_tokens: int | None = Field(
        default=None,
        description="at least 1; a budget above what the model can produce is clamped to it (the applied budget "
        "is `biomedgpt.max_tokens` and the X-BiomedGPT-Max-Tokens header)",
    )
    max_completion_tokens: int | None = Field(default=None, description="wins over max_tokens")
    stream: bool | None = Field(default=False, description="server-sent `chat.completion.chunk` events")
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=1, description="choices, 1 to 8; above 1 needs sampling (temperature > 0)")
    temperature: Temperature = ranged(
        0.0, 2.0, "0 to 2; 0 or absent: greedy (or beam search), above 0: sampling"
    )
    top_p: TopP = ranged(0.0, 1.0, "0 to 1; below 1 samples from the nucleus (temperature 1 unless given)")
    top_k: int | None = Field(
        default=None, ge=0, description="an extension: sample from the k likeliest tokens (0: off)"
    )
    presence_penalty: Penalty = ranged(-2.0, 2.0, f"-2 to 2; {IGNORED}")
    frequency_penalty: Penalty = ranged(-2.0, 2.0, f"-2 to 2; {IGNORED}")
    stop: str | StopList | None = Field(
        default=None,
        description=f"up to {MAX_STOP_STRINGS} non-empty strings: the answer is cut before the first one found "
        '(finish_reason "stop"); the `biomedgpt.output` field keeps the whole parsed output',
    )
    seed: int | None = Field(default=None, description="the same seed gives the same sampled tokens")
    user: str | None = Field(default=None, max_length=256)
    tools: Any = Field(default=None, description=UNSUPPORTED)
    tool_choice: Any = Field(default=None, description=f'{UNSUPPORTED} ("none" is accepted)')
    functions: Any = Field(default=None, description=UNSUPPORTED)
    function_call: Any = Field(default=None, description=f'{UNSUPPORTED} ("none" is accepted)')
    parallel_tool_calls: bool | None = Field(default=None, description="accepted and ignored (no tools here)")
    logprobs: bool | None = Field(default=None, description=f"{UNSUPPORTED} (false is accepted)")
    top_logprobs: int | None = Field(default=None, description=f"{UNSUPPORTED} (0 is accepted)")
    response_format: Any = Field(default=None, description=f'{UNSUPPORTED} ({{"type": "text"}} is accepted)')
    reasoning_effort: Any = Field(default=None, description=UNSUPPORTED)
    reasoning: Any = Field(default=None, description=UNSUPPORTED)
    logit_bias: Any = Field(default=None, description=f"{UNSUPPORTED} ({{}} is accepted)")
    modalities: Any = Field(default=None, description=f'{UNSUPPORTED} (["text"] is accepted)')
    audio: Any = Field(default=None, description=UNSUPPORTED)
    metadata: dict[str, Any] | None = Field(default=None, description="accepted and ignored")
    store: bool | None = Field(default=None, description="accepted and ignored (nothing is stored)")
    service_tier: str | None = Field(default=None, max_length=64, description="accepted and ignored")
    task: str | None = Field(
        default=None, max_length=64, description="pins the task, like a `:task` suffix on the model"
    )
    num_beams: int | None = None
    closed_set: bool | None = None
    mask_format: MaskFormat = "rle"

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: Any) -> Any:
        """One clear message for any wrong `stop` (pydantic's would name each member of the union)."""
        strings = [value] if isinstance(value, str) else value
        if value is None or (
            isinstance(strings, list)
            and 1 <= len(strings) <= MAX_STOP_STRINGS
            and all(isinstance(item, str) and item for item in strings)
        ):
            return value
        raise PydanticCustomError(
            "invalid_stop",
            "must be a non-empty string or a list of 1 to {limit} non-empty strings",
            {"limit": MAX_STOP_STRINGS},
        )

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """Every error the API answers (OpenAI's shape)."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed request (invalid JSON, unreadable form)",
        401: "Missing or wrong API key",
        404: "Unknown task or model",
        413: "Body or image too large",
        415: "Unsupported content type",
        422: "Invalid field values or limits exceeded",
        503: "Model loading or queue full (see Retry-After)",
    }.items()
}


def check_text_lengths(body: TaskBody | ChatBody, *, limit: int) -> None:
    """422 naming the first text longer than `limit` characters, its length and the limit."""
    texts: list[tuple[str, str]] = []
    if isinstance(body, TaskBody):
        texts = [(name, value) for name in TASK_TEXT_FIELDS if (value := getattr(body, name)) is not None]
    else:
        for i, message in enumerate(body.messages):
            if isinstance(message.content, str):
                texts.append((f"messages[{i}].content", message.content))
            elif isinstance(message.content, list):
                texts += [
                    (f"messages[{i}].content[{j}].text", part.text)
                    for j, part in enumerate(message.content)
                    if isinstance(part, TextPart)
                ]
    for where, text in texts:
        if len(text) > limit:
            raise RequestError(
                f"{where}: the text has {len(text):,} characters, more than this server's limit of {limit:,}",
                field=where.split("[", 1)[0],
            )
