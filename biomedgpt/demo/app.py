"""The Gradio multitask demo: one tab per served task, outputs drawn on the image.

`build_demo(backend)` works over any `Backend` (an in-process engine or the HTTP API). Stable `elem_id`s
(`{task}-image`, `{task}-field`, `{task}-submit`, `{task}-status` and one per output, listed in `OUTPUT_IDS`)
let browser tests find the parts, and every task has an `api_name` equal to its name, so
`gradio_client.Client(url).predict(handle_file(png), question, api_name="/vqa")` works. A refused request (a
`RequestError`, an API 4xx) becomes a warning toast plus a message in the tab's status line, never a crash.

Text answers stream: in the tabs of the backend's `streamed` tasks (caption, report, VQA, classification) the
answer box fills as the model decodes, the status line saying "Generating", and the probability and "Done in"
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
from biomedgpt.serve.types import TASK_FIELDS, RequestError

log = logging.getLogger(__name__)

TITLES = {
    "caption": "Caption",
    "report": "Report",
    "vqa": "VQA",
    "classification": "Classification",
    "segmentation": "Segmentation",
    "grounding": "Grounding",
    "detection": "Detection",
}
FIELD_LABELS = {"vqa": "Question", "grounding": "Phrase to find", "segmentation": "Structure to segment"}
FIELD_PLACEHOLDERS = {"vqa": "what modality is this?", "grounding": "the lesion", "segmentation": "lesion"}
# Output components per task, by elem_id suffix: `{task}-{suffix}`; the status line comes last in every tab.
OUTPUT_IDS = {
    "caption": ("text",),
    "report": ("text",),
    "vqa": ("answer", "score"),
    "classification": ("label", "score"),
    "segmentation": ("overlay", "area"),
    "grounding": ("drawn", "box"),
    "detection": ("drawn", "objects"),
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
            for task in backend.tasks:
                with gr.Tab(TITLES.get(task, task), id=task, elem_id=f"tab-{task}"):
                    _task_tab(task, backend, examples.get(task, []), limits)
    demo.queue(default_concurrency_limit=backend.concurrency)
    return demo


def _task_tab(task: str, backend: Backend, examples: list[Example], limits: UploadLimits) -> None:
    with gr.Row():
        with gr.Column():
            # A file, not a gr.Image: Gradio would decode any upload itself, before our checks.
            image = gr.File(
                label=f"Image: {ACCEPTED_FILES}",
                type="filepath",
                file_count="single",
                elem_id=f"{task}-image",
            )
            preview = gr.Image(
                label="Image as the model sees it",
                type="pil",
                format="png",
                interactive=False,
                height=256,
                elem_id=f"{task}-preview",
            )
            inputs: list[gr.components.Component] = [image]
            if task in TASK_FIELDS:
                inputs.append(
                    gr.Textbox(
                        label=FIELD_LABELS[task],
                        placeholder=FIELD_PLACEHOLDERS[task],
                        lines=1,
                        elem_id=f"{task}-field",
                    )
                )
            submit = gr.Button("Run", variant="primary", elem_id=f"{task}-submit")
        with gr.Column():
            outputs = _output_components(task)
            reference = gr.Textbox(
                label="Example source and reference", interactive=False, elem_id=f"{task}-reference"
            )
            status = gr.Markdown(elem_id=f"{task}-status")
    if examples:
        rows = [[str(e.image), *([e.field] if task in TASK_FIELDS else []), e.note] for e in examples]
        gr.Examples(rows, inputs=[*inputs, reference], label="Examples", elem_id=f"{task}-examples")
    # The reference belongs to the example, not to a new upload.
    image.upload(lambda: "", outputs=reference, api_visibility="private", queue=False)
    image.change(_previewer(limits), inputs=image, outputs=[preview, status], api_visibility="private")
    submit.click(
        _handler(task, backend, limits),
        inputs=inputs,
        outputs=[*outputs, status],
        api_name=task,
        concurrency_id="model",  # one limit across all tabs: they share one model
        concurrency_limit=backend.concurrency,
    )


def _output_components(task: str) -> list[gr.components.Component]:
    def eid(suffix: str) -> str:
        return f"{task}-{suffix}"

    if task in ("caption", "report"):
        return [gr.Textbox(label="Generated text", lines=4, interactive=False, elem_id=eid("text"))]
    if task in ("vqa", "classification"):
        name = "Answer" if task == "vqa" else "Label"
        return [
            gr.Textbox(label=name, interactive=False, elem_id=eid(OUTPUT_IDS[task][0])),
            gr.Number(
                label="Probability (greedy, constrained to the answer list)",
                interactive=False,
                elem_id=eid("score"),
            ),
        ]
    if task == "segmentation":
        return [
            gr.Image(
                label="Mask overlay", type="pil", format="png", interactive=False, elem_id=eid("overlay")
            ),
            gr.Textbox(label="Mask area", interactive=False, elem_id=eid("area")),
        ]
    if task == "grounding":
        return [
            gr.Image(label="Region", type="pil", format="png", interactive=False, elem_id=eid("drawn")),
            gr.Textbox(label="Box [x0, y0, x1, y1] in input pixels", interactive=False, elem_id=eid("box")),
        ]
    if task == "detection":
        return [
            gr.Image(label="Objects", type="pil", format="png", interactive=False, elem_id=eid("drawn")),
            gr.JSON(label="Objects (boxes in input pixels)", elem_id=eid("objects")),
        ]
    raise ValueError(f"the demo has no tab for task {task!r}")


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


def _handler(task: str, backend: Backend, limits: UploadLimits) -> Callable[..., Any]:
    """The click handler of a task, with the parameters its inputs give (gradio matches them by position): a
    generator of updates for a streamed task, else a function."""
    empty = (None,) * len(OUTPUT_IDS[task])

    def checked(upload: str | None, field: str | None) -> tuple[Image.Image, dict[str, str]] | str:
        """The decoded upload and the task's fields, or why the request cannot be sent."""
        if upload is None:
            return "Upload an image first (or click an example)."
        if task in TASK_FIELDS and not (field or "").strip():
            return f"Type a {FIELD_LABELS[task].lower()} first."
        try:
            image = load_upload(upload, limits)  # the API's decoder: 16-bit scaled, EXIF applied
        except RequestError as err:
            return _refusal(err)
        return image, ({TASK_FIELDS[task]: field.strip()} if task in TASK_FIELDS and field else {})

    def run(upload: str | None, field: str | None) -> tuple:
        request = checked(upload, field)
        if isinstance(request, str):
            return _refuse(empty, request)
        image, fields = request
        start = time.perf_counter()
        try:
            output = backend.run(task, image, fields)
        except Exception as err:  # the page must stay usable whatever the model or network does
            return _refuse(empty, _failure(task, err))
        seconds = time.perf_counter() - start
        return (*render(task, image, output), f"Done in {seconds:.2f} s.")

    def stream(upload: str | None, field: str | None) -> Iterator[tuple]:
        request = checked(upload, field)
        if isinstance(request, str):
            yield _refuse(empty, request)
            return
        image, fields = request
        start = time.perf_counter()
        output: dict[str, Any] | None = None
        try:
            for text, output in backend.stream(task, image, fields):
                if output is None:
                    # The answer so far; the probability of a closed-set answer comes with its end.
                    yield (text, *empty[1:], f"Generating... {time.perf_counter() - start:.1f} s")
        except Exception as err:  # as in `run`: a message in the page, never a crash
            yield _refuse(empty, _failure(task, err))
            return
        if output is None:
            yield _refuse(empty, _failure(task, RuntimeError("the backend gave no answer")))
            return
        seconds = time.perf_counter() - start
        yield (*render(task, image, output), f"Done in {seconds:.2f} s.")

    if task in backend.streamed:
        if task in TASK_FIELDS:
            return stream

        def stream_without_field(upload: str | None) -> Iterator[tuple]:
            yield from stream(upload, None)

        return stream_without_field

    if task in TASK_FIELDS:
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
    """An engine output -> the values of the task's output components (`OUTPUT_IDS` order)."""
    if task in ("caption", "report"):
        return (output.get("text", ""),)
    if task in ("vqa", "classification"):
        key = "answer" if task == "vqa" else "label"
        score = output.get("score")
        return (output.get(key, output.get("text", "")), None if score is None else float(score))
    if task == "segmentation":
        mask = output.get("mask")
        mask = (
            np.zeros((image.height, image.width), dtype=bool)
            if mask is None
            else np.asarray(mask, dtype=bool)
        )
        return (overlay_mask(image, mask), mask_area(mask))
    if task == "grounding":
        box = output.get("box")
        if box is None:
            return (image, "no box (the model did not write four location tokens)")
        return (draw_boxes(image, [(box, "")]), json.dumps([round(float(v), 1) for v in box]))
    if task == "detection":
        objects = [
            {"box": [round(float(v), 1) for v in o["box"]], "label": o.get("label", "")}
            for o in output.get("objects", [])
        ]
        return (draw_boxes(image, [(o["box"], o["label"]) for o in objects]), objects)
    raise ValueError(f"the demo has no tab for task {task!r}")
