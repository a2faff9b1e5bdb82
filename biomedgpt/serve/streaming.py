"""Streaming chat completions: server-sent `chat.completion.chunk` events, as OpenAI streams them.

One stream, in order:
1. per choice, a chunk whose delta is the role (`{"role": "assistant", "content": ""}`);
2. content deltas as the decoder produces tokens: the tokens so far are detokenized and the new text is sent,
   holding back what may still change (a trailing incomplete UTF-8/BPE piece, trailing spaces, and a tail that
   could begin a `stop` string);
3. per choice, once it ends, the rest of its answer and a chunk with `finish_reason` ("stop": end of sentence
   or a stop string, which also stops its decoding; "length": the budget) and the `biomedgpt` extension;
4. with `stream_options.include_usage`, a chunk with `usage` and no choices;
5. `data: [DONE]`.

Text tasks (caption, report, vqa, classification, free instructions) stream token by token from the
continuous batcher (`ContinuousBatcher.stream`); structured outputs (boxes, masks) are JSON built from the
whole answer, and beam search knows its answer only at the end, so those come as one delta, as does every
answer under the request-level batcher (`batching: request`), which does not decode step by step. Errors
found before the stream starts (validation, a full queue) are ordinary JSON errors; one after it started is
sent as a `data: {"error": ...}` event, which ends the stream. A client that disconnects ends the stream and
cancels its jobs: the scheduler frees their rows at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from biomedgpt.serve.batching import BatchFailed, Outcome, QueueFull
from biomedgpt.serve.continuous import ContinuousBatcher
from biomedgpt.serve.http_errors import error_body
from biomedgpt.serve.openai_compat import completion_id, cut_at_stop, usage
from biomedgpt.serve.payloads import content_text
from biomedgpt.serve.types import RequestError

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class EventStreamResponse(StreamingResponse):
    """`text/event-stream` that stops, and closes its iterator, as soon as the client disconnects.

    Starlette (for servers of ASGI spec 2.4) notices a disconnect only when a send fails, which a stream
    waiting for its next token may not attempt for a long while; here the disconnect is watched all along, and
    closing the iterator cancels the jobs behind it.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], *, headers: dict[str, str] | None = None) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    await self.listen_for_disconnect(receive)
                    group.cancel_scope.cancel()

                async def respond() -> None:
                    with contextlib.suppress(OSError):  # the client left while a chunk was being sent
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                group.start_soon(respond)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


class TextStream:
    """One choice's answer as it is decoded: tokens in, the text that is safe to send out."""

    def __init__(self, tokenizer: Any, *, eos: int, stop: Sequence[str], incremental: bool) -> None:
        self.tokenizer = tokenizer
        self.eos = eos
        self.stop = [s for s in stop if s]
        self.incremental = incremental
        self.tokens: list[int] = []
        self.received = 0
        self.ended = False
        self.sent = ""
        self.stopped = False
        """A stop string was found: the answer ends there."""

    def add(self, tokens: Sequence[int]) -> str:
        """Take the tokens of one step; -> the new text to send (may be empty)."""
        self.received += len(tokens)
        for token in tokens:
            if self.ended or token == self.eos:
                self.ended = True
                break
            self.tokens.append(int(token))
        if not self.incremental or self.stopped:
            return ""
        text = self.tokenizer.decode_text(self.tokens).lstrip()
        cut, stopped = cut_at_stop(text, self.stop)
        if stopped:
            self.stopped = True
            return self._advance(cut.rstrip())
        safe = text.rstrip("\ufffd").rstrip()  # an incomplete UTF-8 piece, or spaces that may end the answer
        return self._advance(safe[: len(safe) - self._stop_prefix(safe)])

    def finish(self, final: str) -> str:
        """The rest of the whole answer `final` (as the non-streamed response has it) after what was sent."""
        if final.startswith(self.sent):
            return self._advance(final)
        log.warning("a streamed answer differs from its final text; the final text is not sent again")
        return ""

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        new, self.sent = text[len(self.sent) :], text
        return new

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of `text` that begins a stop string (it may yet become one)."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


@dataclass
class _Choice:
    text: TextStream
    pump: asyncio.Task | None = None
    done: bool = False
    completion_tokens: int = 0


@dataclass
class ChatStream:
    """The SSE body of one streamed chat completion over `items` (one prepared request per choice)."""

    batcher: Any
    items: Sequence[Any]
    tokenizer: Any
    eos: int
    task: str
    prompt: str
    prompt_tokens: int
    model: str
    fingerprint: str
    stop: Sequence[str]
    include_usage: bool
    timeout_s: float
    max_tokens: int
    dropped_turns: int
    render: Callable[[Any], Any]
    """`TaskResult` -> its JSON-safe output (awaitable: masks are encoded off the event loop)."""
    on_result: Callable[[Any], None] = lambda result: None
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        from biomedgpt.tasks import get_task

        # A task whose answer is the decoded text itself (`Task.text_output`) is sent as it is decoded.
        incremental = get_task(self.task).text_output
        self.choices = [
            _Choice(TextStream(self.tokenizer, eos=self.eos, stop=self.stop, incremental=incremental))
            for _ in self.items
        ]
        self.events: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self.errors: list[BaseException] = []

    async def open(self) -> None:
        """Submit every choice; errors at submission (a full queue, limits) are raised here, before any byte."""
        for index, (choice, item) in enumerate(zip(self.choices, self.items)):
            choice.pump = asyncio.create_task(self._pump(index, item))
        await asyncio.sleep(0)  # each pump runs up to its first wait: the submission itself
        if self.errors:
            await self.close()
            raise self.errors[0]

    async def _pump(self, index: int, item: Any) -> None:
        try:
            if isinstance(self.batcher, ContinuousBatcher):
                async with contextlib.aclosing(self.batcher.stream(item)) as events:
                    async for event in events:
                        self.events.put_nowait((index, event))
            else:
                self.events.put_nowait((index, await self.batcher.submit(item)))
        except Exception as err:
            self.errors.append(err)
            self.events.put_nowait((index, err))

    async def close(self) -> None:
        """Cancel the choices still decoding (their jobs leave the batch at the next step)."""
        pumps = [c.pump for c in self.choices if c.pump is not None and not c.pump.done()]
        for pump in pumps:
            pump.cancel()
        if pumps:
            await asyncio.gather(*pumps, return_exceptions=True)

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return sse(chunk)

    def _delta(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._chunk([choice])

    async def body(self) -> AsyncIterator[bytes]:
        """The SSE frames; closing it (a client gone) cancels what is still decoding."""
        deadline = time.monotonic() + self.timeout_s
        try:
            for index in range(len(self.choices)):
                yield self._delta(index, {"role": "assistant", "content": ""})
            while not all(choice.done for choice in self.choices):
                try:
                    index, event = await asyncio.wait_for(self.events.get(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    yield sse(error_body(504, f"no answer within {self.timeout_s:g} s", code="timeout"))
                    return
                choice = self.choices[index]
                if choice.done:
                    continue
                if isinstance(event, BaseException):
                    yield sse(_error_event(event))
                    return
                if isinstance(event, Outcome):
                    try:
                        frames = await self._finish(index, event)
                    except Exception as err:  # rendering the output failed: the server's fault, logged
                        yield sse(_error_event(err))
                        return
                    for frame in frames:
                        yield frame
                    continue
                new = choice.text.add(event)
                if new:
                    yield self._delta(index, {"content": new})
                if choice.text.stopped:  # a stop string: the answer ends here, and so does its decoding
                    if choice.pump is not None:
                        choice.pump.cancel()
                    choice.done, choice.completion_tokens = True, choice.text.received
                    yield self._delta(index, {}, "stop")
            if self.include_usage:
                completion = sum(choice.completion_tokens for choice in self.choices)
                yield self._chunk([], usage=usage(self.prompt_tokens, completion))
            yield DONE
        finally:
            await self.close()

    async def _finish(self, index: int, outcome: Outcome) -> list[bytes]:
        choice = self.choices[index]
        result = outcome.result
        self.on_result(result)
        output = await self.render(result)
        final, stopped = cut_at_stop(content_text(self.task, output), self.stop)
        frames = []
        rest = choice.text.finish(final)
        if rest:
            frames.append(self._delta(index, {"content": rest}))
        finished = result.tokens[-1:] == [self.eos] or stopped
        choice.done, choice.completion_tokens = True, result.generated_tokens
        extra = {
            "task": self.task,
            "prompt": self.prompt,
            "output": output,
            "max_tokens": self.max_tokens,
            "dropped_turns": self.dropped_turns,
        }
        choice_dict = {
            "index": index,
            "delta": {},
            "logprobs": None,
            "finish_reason": "stop" if finished else "length",
        }
        frames.append(self._chunk([choice_dict], biomedgpt=extra))
        return frames


def _error_event(err: BaseException) -> dict[str, Any]:
    """An error after the stream started, in the JSON error shape (the details stay in the server log)."""
    if isinstance(err, RequestError):
        return error_body(err.status, err.message, param=err.field)
    if isinstance(err, QueueFull):
        return error_body(503, "the server is busy; retry shortly", code="queue_full")
    if not isinstance(err, BatchFailed):
        log.error("a streamed request failed", exc_info=err)
    return error_body(500, "inference failed; see the server log", code="inference_failed")
