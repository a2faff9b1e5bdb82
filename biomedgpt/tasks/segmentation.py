"""Segmentation: ` segment the {structure}.` -> the mask written in the unified vocabulary.

BiomedGPT has no segmentation task, so the prompt is ours: ` segment the {structure}.`, shaped like
OFA's other instructions (leading space, lower case, one sentence), with the structure name from the
sample's `target` field ("lesion", "left lung", ...).

How a mask becomes tokens is the job of `biomedgpt.tasks.segmentation_codec` (polygons of `<bin>`
tokens; docs/segmentation.md says why), a separate module imported lazily through this interface:

    encode_mask(mask: np.ndarray, *, image_size: int, layout: VocabLayout, budget: int | None = None) -> list[int]
        (H, W) bool/0-1 mask at the ORIGINAL image size -> token ids (bins and/or codes), WITHOUT `</s>`;
        `image_size` is the model's square input side; `budget` caps the length (coarser polygons, then the
        largest parts that fit: a training run's `data.max_target_tokens` keeps the big nuclei of a crowded tile
        rather than skipping the tile).
    decode_mask(ids: list[int], *, image_size: int, layout: VocabLayout,
                out_shape: tuple[int, int]) -> np.ndarray
        token ids (no `<s>`/`</s>`/pads) -> (H, W) bool mask of `out_shape` = (height, width).
    CONSTRAINT: str   optional, "bins" (polygons, box + codes) or "codes"; default "bins".

If the codec cannot be imported, the task raises `TaskUnavailableError` when used (never at import).
Scored with Dice and IoU.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import TargetTooLongError, Task, clean_text, layout_of, require_module, strip_output

CODEC_MODULE = "biomedgpt.tasks.segmentation_codec"


def load_codec() -> Any:
    """The mask codec module, or `TaskUnavailableError`."""
    return require_module(CODEC_MODULE, task="segmentation", what="encode_mask/decode_mask")


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a mask to (height, width), as float in {0, 1}."""
    mask = np.asarray(mask) > 0
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[rows][:, cols].astype(np.float32)


class SegmentationTask(Task):
    name = "segmentation"
    prompt = " segment the {structure}."
    train_templates = (
        prompt,
        " produce a mask of the {structure}.",
        " outline the {structure}.",
        " delineate the {structure} in the image.",
        " which pixels belong to the {structure}?",
        " draw the contour of the {structure}.",
        " give the segmentation of the {structure}.",
    )
    eval_templates = (
        " mark the area covered by the {structure}.",
        " show the boundary of the {structure}.",
        " create a segmentation mask for the {structure}.",
    )
    metrics = ("dice", "iou", "dice_foreground")
    uses_mask = True
    served = True
    title = "Segmentation"
    output_kind = "mask"
    request_field = "structure"
    field_label = "Structure to segment"
    field_example = "lesion"
    BASELINE_SIDE: ClassVar[int] = 64
    """The side of the mean training mask (`fit_baseline`), resized to each image when scored."""

    def fields_from_request(self, value: str) -> dict[str, Any]:
        return {"target": value}

    def default_max_new_tokens(self, default: int, *, image_size: int) -> int:
        """Room for the longest mask the codec writes at this input size."""
        from biomedgpt.tasks.segmentation_codec import max_tokens

        return max(default, max_tokens(image_size) + 1)

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return np.asarray(sample.mask) > 0, {}

    def prediction(self, output: dict[str, Any]) -> Any:
        return output["mask"]

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        """Mean Dice and IoU over all samples, and `dice_foreground`: mean Dice over the samples whose target is
        not empty (an empty prediction scores 1 on an empty target, which flatters a model that draws nothing)."""
        from biomedgpt.eval.metrics import segmentation_metrics, segmentation_scores

        scores = segmentation_metrics(predictions, references)
        dice = segmentation_scores(predictions, references)["dice"]
        foreground = [d for d, r in zip(dice, references) if np.any(r)]
        scores["dice_foreground"] = sum(foreground) / len(foreground) if foreground else float("nan")
        return scores

    def fit_baseline(self, samples: Iterable[Sample]) -> dict[str, Any] | None:
        """The mean training mask (each resized to `BASELINE_SIDE` square, averaged, kept where >= 0.5), as RLE."""
        from biomedgpt.eval.rle import mask_to_rle

        side = self.BASELINE_SIDE
        masks = [resize_mask(s.mask, (side, side)) for s in self.train_samples(samples) if s.mask is not None]
        return mask_to_rle(np.mean(masks, axis=0) >= 0.5) if masks else None

    def baseline_predictions(self, baseline: Any, samples: Sequence[Sample]) -> dict[str, list]:
        from biomedgpt.eval.rle import rle_to_mask

        mean = rle_to_mask(baseline)
        shapes = [np.asarray(s.mask).shape for s in samples]
        return {
            "empty_mask": [np.zeros(shape, dtype=bool) for shape in shapes],
            "mean_mask": [resize_mask(mean, shape) > 0.5 for shape in shapes],
        }

    @property
    def constraint(self) -> str:  # type: ignore[override]
        """The codec's `CONSTRAINT` ("bins" when the codec does not say or is not there yet)."""
        try:
            return str(getattr(load_codec(), "CONSTRAINT", "bins"))
        except Exception:
            return "bins"

    def allowed_token_mask(self, layout: Any) -> np.ndarray:
        """Bins, `</s>` and `<mask>`: the Florence-2-style codec separates polygons with `<mask>`."""
        mask = super().allowed_token_mask(layout)
        mask[layout.mask_id] = True
        return mask

    def check_available(self) -> None:
        load_codec()

    def prompt_fields(self, sample: Sample, *, rng: random.Random | None = None) -> dict[str, str]:
        return {"structure": clean_text(sample.fields["target"])}

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        if image_size is None:
            raise ValueError("segmentation targets depend on the model's input size: pass image_size")
        if sample.mask is None:
            raise ValueError(f"segmentation sample {sample.key!r} has no mask")
        layout = layout_of(tokenizer)
        budget = None if max_tokens is None else max_tokens - 1  # room for </s>
        ids = [
            int(t)
            for t in load_codec().encode_mask(
                sample.mask, image_size=image_size, layout=layout, budget=budget
            )
        ]
        if not ids and np.any(sample.mask):  # not even the largest part fits: an empty target would be wrong
            raise TargetTooLongError(f"no part of the mask fits in {max_tokens} tokens")
        return [*ids, layout.eos_id]

    def postprocess(
        self, ids: Any, tokenizer: Any, *, image_size: int, orig_size: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """{"mask": (height, width) bool array at the original image size}."""
        width, height = orig_size or (image_size, image_size)
        layout = layout_of(tokenizer)
        mask = load_codec().decode_mask(
            strip_output(ids, layout), image_size=image_size, layout=layout, out_shape=(height, width)
        )
        return {"mask": np.asarray(mask, dtype=bool)}


TASK = SegmentationTask()
