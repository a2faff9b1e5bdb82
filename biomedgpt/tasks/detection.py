"""Object detection: ` what are the objects in the image?` -> (4 `<bin>` + label text)* then `</s>`.

OFA's detection target: for each box, `<bin_x0> <bin_y0> <bin_x1> <bin_y1>` followed by
BPE(" " + label). OFA keeps the annotation order; here objects are written in reading order (top to
bottom, then left to right, by the box's top-left corner) so that the same image always gives the
same sequence. When the target would pass `max_tokens`, whole trailing objects are dropped (never a
partial box). Boxes are quantized as in grounding. Scored with mAP@0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, encode_text, layout_of, strip_output
from biomedgpt.tasks.grounding import box_ids, ids_to_box, image_wh


def reading_order(boxes: list[dict]) -> list[dict]:
    """Boxes sorted top to bottom, then left to right (by y0, then x0)."""
    return sorted(boxes, key=lambda entry: (float(entry["box"][1]), float(entry["box"][0])))


class DetectionTask(Task):
    name = "detection"
    prompt = " what are the objects in the image?"
    train_templates = (
        prompt,
        " detect the objects in the image.",
        " find all objects and their locations.",
        " list every object with its bounding box.",
        " what objects can be located in this image?",
        " detect all findings in the image.",
        " locate all abnormalities in the image.",
    )
    eval_templates = (
        " mark every object in the image with a box.",
        " which objects appear in the image, and where?",
        " enumerate the objects in this image with their boxes.",
    )
    constraint = "bins"
    metrics = ("map@0.5",)
    served = True
    title = "Detection"
    output_kind = "objects"

    def allowed_token_mask(self, layout: Any) -> np.ndarray:
        """Bins, text and `</s>`: each box is followed by its label's words (the bins alone would leave every
        label empty, and no box could match its class)."""
        from biomedgpt.tokenization.ranges import allowed_token_mask

        return allowed_token_mask(layout, "bins") | allowed_token_mask(layout, "text")

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return [{"box": b["box"], "label": b["label"]} for b in sample.fields["boxes"]], {}

    def prediction(self, output: dict[str, Any]) -> Any:
        return output.get("objects", [])

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        from biomedgpt.eval.metrics import mean_average_precision

        return mean_average_precision(predictions, references)

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        layout, size = layout_of(tokenizer), image_wh(sample)
        ids: list[int] = []
        for entry in reading_order(sample.fields["boxes"]):
            obj = box_ids(entry["box"], size=size, layout=layout) + encode_text(
                tokenizer, " " + entry["label"]
            )
            if max_tokens is not None and len(ids) + len(obj) + 1 > max_tokens:
                break
            ids.extend(obj)
        return [*ids, layout.eos_id]

    def postprocess(
        self, ids: Any, tokenizer: Any, *, image_size: int, orig_size: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """{"objects": [{"box": [x0, y0, x1, y1] in original pixels, "label": str}, ...]}; incomplete
        boxes (fewer than 4 bins in a row) are dropped."""
        layout = layout_of(tokenizer)
        size = orig_size or (image_size, image_size)
        objects: list[dict[str, Any]] = []
        bins: list[int] = []
        label: list[int] = []
        for token in [*strip_output(ids, layout), None]:
            if token is None or (layout.is_bin(token) and (label or len(bins) == 4)):
                if len(bins) == 4:
                    text = tokenizer.decode_text(label).strip()
                    objects.append({"box": ids_to_box(bins, size=size, layout=layout), "label": text})
                bins, label = [], []
            if token is None:
                break
            if layout.is_bin(token):
                bins.append(token)
            elif len(bins) == 4:
                label.append(token)
            else:
                bins = []  # text after an incomplete box: drop that box
        return {"objects": objects}


TASK = DetectionTask()
