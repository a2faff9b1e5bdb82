"""The Gradio multitask demo: one tab per served task, outputs drawn on the image.

`build_demo(backend)` works over any `Backend` (an in-process engine or the HTTP API). The demo names no task:
each tab asks its task (`biomedgpt.tasks`) for its title, its request field's label and placeholder, and its
`output_kind`, which picks the output widgets and how an output is drawn. Stable `elem_id`s (`{task}-image`,
`{task}-field`, `{task}-submit`, `{task}-status` and one per output, listed per output kind in `OUTPUT_IDS`)
let browser tests find the parts, and every task has an `api_name` equal to its name, so
`gradio_client.Client(url).predict(handle_file(png), question, api_name="/vqa")` works. A refused request (a
`RequestError`, an API 4xx) becomes a warning toast plus a message in the tab's status line, never a crash.

Text answers stream: in the tabs of the backend's `streamed` tasks (those whose answer is text) the answer box fills as the model decodes, the status line saying "Generating", and the probability and "Done in"
arrive with the end of the answer. gradio_client's `predict` gets the final
values; `submit` gets every update.

The upload is taken as a file (`gr.File`), not as an image: Gradio never decodes it. The demo checks its size,
then decodes it with the API's own decoder and limits (`biomedgpt.serve.images.decode_image`, `ServeConfig`'s
image limits): a corrupt, truncated, huge, PDF or QOI upload gets the API's message in the page, and an
81-megapixel file is refused from its header before a pixel is decoded. The decoded image is shown in a preview.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from biomedgpt.demo.backends import Backend
from biomedgpt.demo.drawing import draw_boxes, mask_area, overlay_mask
from biomedgpt.demo.examples import Example, Examples
from biomedgpt.serve.config import ServeConfig
from biomedgpt.serve.images import ImageLimits, decode_image
from biomedgpt.serve.types import RequestError
from biomedgpt.tasks import Task, get_task

log = logging.getLogger(__name__)

# Output components per output kind (`Task.output_kind`), by elem_id suffix: `{task}-{suffix}`; the status line
# comes last in every tab. A closed-set answer's box is named after its kind ("answer", "label").
OUTPUT_IDS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "answer": ("answer", "score"),
    "label": ("label", "score"),
    "mask": ("overlay", "area"),
    "box": ("drawn", "box"),
    "objects": ("drawn", "objects"),
}
NOTICE = "A research demo of a multitask model: not a medical device, not for diagnosis."
ACCEPTED_FILES = "PNG, JPEG, WebP, BMP, TIFF or DICOM (.dcm)"


@dataclass(frozen=True, kw_only=True)
class UploadLimits:
    """What an upload may be: the API's own limits (`ServeConfig` defaults unless given)."""

    max_bytes: int
    image: ImageLimits

    @classmethod
    def from_config(cls, config: ServeConfig | None = None) -> UploadLimits:
        config = config or ServeConfig()
        return cls(max_bytes=config.max_body_bytes, image=config.image_limits())


def load_upload(path: str | os.PathLike[str], limits: UploadLimits) -> Image.Image:
    """An uploaded file -> upright 8-bit RGB, through the API's decoder; `RequestError` says what is wrong."""
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise RequestError(
            f"the file has {size:,} bytes, more than the limit of {limits.max_bytes:,}",
            status=413,
            field="image",
        )
    with open(path, "rb") as f:
        return decode_image(f.read(), limits.image).image


def build_demo(
    backend: Backend,
    *,
    examples: Examples | None = None,
    examples_source: str = "",
    limits: UploadLimits | None = None,
) -> gr.Blocks:
    """The demo app over `backend`; `examples` (from `load_examples`) fill each tab's example table; uploads are
    checked against `limits` (default: the API's default limits)."""
    examples = examples or {}
    limits = limits or UploadLimits.from_config()
    with gr.Blocks(title="BiomedGPT demo", analytics_enabled=False) as demo:
        source = f" Examples: {examples_source}." if examples_source else ""
        gr.Markdown(
            f"# BiomedGPT\nAnswers from {backend.describe()}.{source}\n\n*{NOTICE}*", elem_id="demo-header"
        )
        with gr.Tabs(elem_id="task-tabs"):
            for name in backend.tasks:
                task = get_task(name)
                with gr.Tab(task.title or name, id=name, elem_id=f"tab-{name}"):
                    _task_tab(task, backend, examples.get(name, []), limits)
    demo.queue(default_concurrency_limit=backend.concurrency)
    return demo


def _task_tab(task: Task, backend: Backend, examples: list[Example], limits: UploadLimits) -> None:
    name = task.name
    with gr.Row():
        with gr.Column():
            # A file, not a gr.Image: Gradio would decode any upload itself, before our checks.
            image = gr.File(
                label=f"Image: {ACCEPTED_FILES}",
                type="filepath",
                file_count="single",
                elem_id=f"{name}-image",
            )
            preview = gr.Image(
                label="Image as the model sees it",
                type="pil",
                format="png",
                interactive=False,
                height=256,
                elem_id=f"{name}-preview",
            )
            inputs: list[gr.components.Component] = [image]
            if task.request_field is not None:
                inputs.append(
                    gr.Textbox(
                        label=task.field_label,
                        placeholder=task.field_example,
                        lines=1,
                        elem_id=f"{name}-field",
                    )
                )
            submit = gr.Button("Run", variant="primary", elem_id=f"{name}-submit")
        with gr.Column():
            outputs = _output_components(task)
            reference = gr.Textbox(
                label="Example source and reference", interactive=False, elem_id=f"{name}-reference"
            )
            status = gr.Markdown(elem_id=f"{name}-status")
    if examples:
        has_field = task.request_field is not None
        rows = [[str(e.image), *([e.field] if has_field else []), e.note] for e in examples]
        gr.Examples(rows, inputs=[*inputs, reference], label="Examples", elem_id=f"{name}-examples")
    # The reference belongs to the example, not to a new upload.
    image.upload(lambda: "", outputs=reference, api_visibility="private", queue=False)
    image.change(_previewer(limits), inputs=image, outputs=[preview, status], api_visibility="private")
    submit.click(
        _handler(task, backend, limits),
        inputs=inputs,
        outputs=[*outputs, status],
        api_name=name,
        concurrency_id="model",  # one limit across all tabs: they share one model
        concurrency_limit=backend.concurrency,
    )


def _output_components(task: Task) -> list[gr.components.Component]:
    """The task's output widgets, chosen by its output kind (`OUTPUT_IDS` order)."""
    kind = task.output_kind
    ids = OUTPUT_IDS[kind]

    def eid(suffix: str) -> str:
        return f"{task.name}-{suffix}"

    if kind == "text":
        return [gr.Textbox(label="Generated text", lines=4, interactive=False, elem_id=eid("text"))]
    if kind in ("answer", "label"):  # a closed-set answer and its probability
        return [
            gr.Textbox(label=kind.capitalize(), interactive=False, elem_id=eid(ids[0])),
            gr.Number(
                label="Probability (greedy, constrained to the answer list)",
                interactive=False,
                elem_id=eid("score"),
            ),
        ]
    if kind == "mask":
        return [
            gr.Image(
                label="Mask overlay", type="pil", format="png", interactive=False, elem_id=eid("overlay")
            ),
            gr.Textbox(label="Mask area", interactive=False, elem_id=eid("area")),
        ]
    if kind == "box":
        return [
            gr.Image(label="Region", type="pil", format="png", interactive=False, elem_id=eid("drawn")),
            gr.Textbox(label="Box [x0, y0, x1, y1] in input pixels", interactive=False, elem_id=eid("box")),
        ]
    if kind == "objects":
        return [
            gr.Image(label="Objects", type="pil", format="png", interactive=False, elem_id=eid("drawn")),
            gr.JSON(label="Objects (boxes in input pixels)", elem_id=eid("objects")),
        ]
    raise ValueError(f"the demo cannot show output kind {kind!r} (task {task.name})")


def _previewer(limits: UploadLimits) -> Callable[[str | None], tuple]:
    """The upload's change handler: the decoded image, or the reason it is refused in the status line."""

    def preview(upload: str | None) -> tuple:
        if upload is None:
            return None, ""
        try:
            return load_upload(upload, limits), ""
        except RequestError as err:
            return _refuse((None,), _refusal(err))

    return preview


def _refusal(err: RequestError) -> str:
    return f"The image was refused ({err.status}): {err.message}. Send {ACCEPTED_FILES}."


def _handler(task: Task, backend: Backend, limits: UploadLimits) -> Callable[..., Any]:
    """The click handler of a task, with the parameters its inputs give (gradio matches them by position): a
    generator of updates for a streamed task, else a function."""
    name = task.name
    empty = (None,) * len(OUTPUT_IDS[task.output_kind])
    field_name = task.request_field

    def checked(upload: str | None, field: str | None) -> tuple[Image.Image, dict[str, str]] | str:
        """The decoded upload and the task's fields, or why the request cannot be sent."""
        if upload is None:
            return "Upload an image first (or click an example)."
        if field_name is not None and not (field or "").strip():
            return f"Type a {task.field_label.lower()} first."
        try:
            image = load_upload(upload, limits)  # the API's decoder: 16-bit scaled, EXIF applied
        except RequestError as err:
            return _refusal(err)
        return image, ({field_name: field.strip()} if field_name is not None and field else {})

    def run(upload: str | None, field: str | None) -> tuple:
        request = checked(upload, field)
        if isinstance(request, str):
            return _refuse(empty, request)
        image, fields = request
        start = time.perf_counter()
        try:
            output = backend.run(name, image, fields)
        except Exception as err:  # the page must stay usable whatever the model or network does
            return _refuse(empty, _failure(name, err))
        seconds = time.perf_counter() - start
        return (*render(name, image, output), f"Done in {seconds:.2f} s.")

    def stream(upload: str | None, field: str | None) -> Iterator[tuple]:
        request = checked(upload, field)
        if isinstance(request, str):
            yield _refuse(empty, request)
            return
        image, fields = request
        start = time.perf_counter()
        output: dict[str, Any] | None = None
        try:
            for text, output in backend.stream(name, image, fields):
                if output is None:
                    # The answer so far; the probability of a closed-set answer comes with its end.
                    yield (text, *empty[1:], f"Generating... {time.perf_counter() - start:.1f} s")
        except Exception as err:  # as in `run`: a message in the page, never a crash
            yield _refuse(empty, _failure(name, err))
            return
        if output is None:
            yield _refuse(empty, _failure(name, RuntimeError("the backend gave no answer")))
            return
        seconds = time.perf_counter() - start
        yield (*render(name, image, output), f"Done in {seconds:.2f} s.")

    if name in backend.streamed:
        if field_name is not None:
            return stream

        def stream_without_field(upload: str | None) -> Iterator[tuple]:
            yield from stream(upload, None)

        return stream_without_field

    if field_name is not None:
        return run

    def run_without_field(upload: str | None) -> tuple:
        return run(upload, None)

    return run_without_field


def _failure(task: str, err: Exception) -> str:
    """The status line for a request that failed: the refusal's own words, or what went wrong (logged)."""
    if isinstance(err, RequestError):
        return f"The request was refused ({err.status}): {err.message}"
    log.error("demo %s request failed", task, exc_info=err)
    return f"Something went wrong: {type(err).__name__}: {err}"


def _refuse(empty: tuple, message: str) -> tuple:
    gr.Warning(message)
    return (*empty, f"**Error:** {message}")


def render(task: str, image: Image.Image, output: dict[str, Any]) -> tuple:
    """An engine output -> the values of the task's output components (`OUTPUT_IDS` order of its output kind)."""
    kind = get_task(task).output_kind
    if kind == "text":
        return (output.get("text", ""),)
    if kind in ("answer", "label"):  # a closed-set answer, under its kind, and its probability
        score = output.get("score")
        return (output.get(kind, output.get("text", "")), None if score is None else float(score))
    if kind == "mask":
        mask = output.get("mask")
        mask = (
            np.zeros((image.height, image.width), dtype=bool)
            if mask is None
            else np.asarray(mask, dtype=bool)
        )
        return (overlay_mask(image, mask), mask_area(mask))
    if kind == "box":
        box = output.get("box")
        if box is None:
            return (image, "no box (the model did not write four location tokens)")
        return (draw_boxes(image, [(box, "")]), json.dumps([round(float(v), 1) for v in box]))
    if kind == "objects":
        objects = [
            {"box": [round(float(v), 1) for v in o["box"]], "label": o.get("label", "")}
            for o in output.get("objects", [])
        ]
        return (draw_boxes(image, [(o["box"], o["label"]) for o in objects]), objects)
    raise ValueError(f"the demo cannot show output kind {kind!r} (task {task})")
