"""Visual grounding: ` which region does the text " {t} " describe?` -> 4 `<bin>` tokens (x0 y0 x1 y1).

Boxes are quantized as in OFA's refcoco dataset: the image is resized to the model's square input
and each coordinate, normalized by that frame's side, becomes `round(c * (num_bins - 1))`. Because
the resize is a per-axis scale, this equals `round(x / width * (num_bins - 1))` on the original
pixels (x by width, y by height), which is what `biomedgpt.tokenization.locations` computes; the
target therefore does not depend on the input size. The first box of the sample is the referent
(its label is the referring phrase). Scored with IoU and acc@0.5.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import TargetTooLongError, Task, clean_text, layout_of, strip_output
from biomedgpt.tokenization.locations import bins_to_box, box_to_bins


def image_wh(sample: Sample) -> tuple[int, int]:
    """(width, height) of the sample's image."""
    if sample.image is None:
        raise ValueError(f"sample {sample.key!r} has no image to place boxes in")
    return int(sample.image.shape[1]), int(sample.image.shape[0])


def box_ids(box: Any, *, size: tuple[int, int], layout: Any) -> list[int]:
    """A pixel box -> the 4 `<bin>` ids (coordinates clipped to the image)."""
    bins = box_to_bins(box, width=size[0], height=size[1], num_bins=layout.num_bins, clip=True)
    return [layout.bin_id(b) for b in bins]


def ids_to_box(ids: list[int], *, size: tuple[int, int], layout: Any) -> list[float]:
    """4 `<bin>` ids -> a pixel box with x0 <= x1 and y0 <= y1."""
    bins = [layout.bin_index(t) for t in ids]
    x0, y0, x1, y1 = bins_to_box(bins, width=size[0], height=size[1], num_bins=layout.num_bins)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


class GroundingTask(Task):
    name = "grounding"
    prompt = ' which region does the text " {text} " describe?'
    train_templates = (
        prompt,
        ' where is " {text} " in the image?',
        ' locate " {text} " in the image.',
        ' find the region described by " {text} ".',
        ' give the bounding box of " {text} ".',
        ' which area shows " {text} "?',
        ' point out " {text} " with a box.',
    )
    eval_templates = (
        ' draw a box around " {text} ".',
        ' in which region of the image is " {text} "?',
        ' show me where " {text} " is.',
    )
    constraint = "bins"
    metrics = ("iou", "acc@0.5")
    served = True
    title = "Grounding"
    output_kind = "box"
    request_field = "text"
    field_label = "Phrase to find"
    field_example = "the lesion"

    def fields_from_request(self, value: str) -> dict[str, Any]:
        return {"boxes": [{"label": value, "box": [0, 0, 1, 1]}]}

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return sample.fields["boxes"][0]["box"], {}

    def prediction(self, output: dict[str, Any]) -> Any:
        return output.get("box")

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        from biomedgpt.eval.metrics import grounding_metrics

        return grounding_metrics(predictions, references)

    def fit_baseline(self, samples: Iterable[Sample]) -> list[float] | None:
        """The mean referent box of the training samples, as fractions of the image's width and height."""
        boxes = []
        for sample in self.train_samples(samples):
            width, height = image_wh(sample)
            x0, y0, x1, y1 = (float(v) for v in sample.fields["boxes"][0]["box"])
            boxes.append([x0 / width, y0 / height, x1 / width, y1 / height])
        return [round(sum(c) / len(boxes), 6) for c in zip(*boxes)] if boxes else None

    def baseline_predictions(self, baseline: Any, samples: Sequence[Sample]) -> dict[str, list]:
        scaled = []
        for sample in samples:
            width, height = image_wh(sample)
            scaled.append(
                [baseline[0] * width, baseline[1] * height, baseline[2] * width, baseline[3] * height]
            )
        return {"mean_box": scaled}

    def prompt_fields(self, sample: Sample, *, rng: random.Random | None = None) -> dict[str, str]:
        return {"text": clean_text(sample.fields["boxes"][0]["label"])}

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        layout = layout_of(tokenizer)
        ids = [
            *box_ids(sample.fields["boxes"][0]["box"], size=image_wh(sample), layout=layout),
            layout.eos_id,
        ]
        if max_tokens is not None and len(ids) > max_tokens:
            raise TargetTooLongError(f"a grounding target is {len(ids)} tokens; max_tokens is {max_tokens}")
        return ids

    def postprocess(
        self, ids: Any, tokenizer: Any, *, image_size: int, orig_size: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """{"box": [x0, y0, x1, y1] in original pixels, or None when fewer than 4 bins came out}."""
        layout = layout_of(tokenizer)
        size = orig_size or (image_size, image_size)
        bins = [t for t in strip_output(ids, layout) if layout.is_bin(t)][:4]
        return {"box": ids_to_box(bins, size=size, layout=layout) if len(bins) == 4 else None}


TASK = GroundingTask()
