"""Example inputs for the demo's tabs: a few test-split samples of the demo corpus, or generated images.

Corpus images are third-party data: they are written to a temporary (or given) folder when the demo starts and
never into the repository. Without a corpus (a fresh clone, CI) two images drawn with numpy stand in, so every
tab still has something to click.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from biomedgpt.serve.types import SERVED_TASKS, TASK_FIELDS

DEFAULT_SHARDS = "data_shards/demo"
# Tasks whose prompt needs no field can borrow any image; caption and classification images suit them best.
FIELDLESS_DONORS = ("caption", "classification")


@dataclass(frozen=True)
class Example:
    image: Path
    field: str | None = None
    """The task's field (VQA question, grounding phrase, segmentation structure); None for fieldless tasks."""
    note: str = ""
    """Where it comes from and the reference answer, shown as the example's caption."""


Examples = dict[str, list[Example]]


def load_examples(
    shards: str | None = None, *, cache_dir: str | Path | None = None, per_task: int = 3
) -> tuple[Examples, str]:
    """Examples for every served task and a line saying where they come from.

    `shards` (a folder, glob or brace pattern) defaults to the demo corpus; when it does not exist, or holds
    nothing for a task, generated examples fill in.
    """
    cache = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="biomedgpt-demo-examples-"))
    examples: Examples = {}
    source = "generated images"
    pattern = shards or DEFAULT_SHARDS
    if shards is not None or Path(DEFAULT_SHARDS).is_dir():
        examples = corpus_examples([pattern], cache, per_task=per_task)
        source = f"the test split of {pattern}"
    generated = generated_examples(cache)
    for task in SERVED_TASKS:
        if not examples.get(task) and task not in TASK_FIELDS:
            donors = [e for d in FIELDLESS_DONORS for e in examples.get(d, [])]
            examples[task] = [Example(e.image, None, e.note.split(":")[0]) for e in donors[:per_task]]
        if not examples.get(task):
            examples[task] = generated[task]
    return examples, source


def corpus_examples(patterns: Sequence[str], cache_dir: Path, *, per_task: int = 3) -> Examples:
    """Up to `per_task` test samples per task, from as many different sources as there are, as PNG files."""
    from biomedgpt.eval.runner import iter_samples, resolve_shards

    cache_dir.mkdir(parents=True, exist_ok=True)
    by_source: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for sample in iter_samples(resolve_shards(patterns, split="test"), split="test", tasks=set(SERVED_TASKS)):
        if sample.task == "segmentation" and not np.any(sample.mask):
            continue  # an empty reference mask makes a dull example
        if sample.image is not None and len(by_source[sample.task][sample.source or "?"]) < per_task:
            by_source[sample.task][sample.source or "?"].append(sample)
    examples: Examples = {}
    for task, sources in by_source.items():
        chosen = _round_robin(list(sources.values()), per_task)
        examples[task] = [_write_example(sample, cache_dir) for sample in chosen]
    return examples


def _round_robin(groups: list[list], limit: int) -> list:
    """One from each group in turn, so three examples show three sources when there are three."""
    chosen: list = []
    depth = 0
    while len(chosen) < limit and any(depth < len(g) for g in groups):
        chosen.extend(g[depth] for g in groups if depth < len(g))
        depth += 1
    return chosen[:limit]


def _write_example(sample, cache_dir: Path) -> Example:
    from biomedgpt.model.image_processing import to_rgb_uint8

    path = cache_dir / f"{sample.key}.png"
    if not path.is_file():
        image = sample.image
        pil = Image.fromarray(image) if image.dtype == np.uint8 else to_rgb_uint8(image)
        pil.save(path)
    field = _field_of(sample)
    return Example(path, field, f"{sample.source or sample.key}: {_reference_text(sample)}")


def _reference_text(sample) -> str:
    """The sample's reference answer in words (a mask or a list of boxes is summarised, not printed)."""
    from biomedgpt.eval.runner import reference_of

    reference, _ = reference_of(sample)
    if isinstance(reference, np.ndarray):
        return f"mask of {int(reference.sum())} px"
    if sample.task == "detection":
        return f"{len(reference)} objects"
    if sample.task == "grounding":
        return "box " + ", ".join(f"{v:g}" for v in reference)
    return _short(reference)


def _field_of(sample) -> str | None:
    if sample.task == "vqa":
        return sample.fields["question"]
    if sample.task == "grounding":
        return sample.fields["boxes"][0]["label"]
    if sample.task == "segmentation":
        return sample.fields["target"]
    return None


def _short(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- generated examples ---------------------------------------------------------------------------------
def generated_examples(cache_dir: Path) -> Examples:
    """Two drawn images (a chest-CT-like slice with a nodule, fluorescent nuclei) with fields for every task."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    chest = cache_dir / "generated-chest.png"
    cells = cache_dir / "generated-nuclei.png"
    Image.fromarray(draw_chest_slice()).save(chest)
    Image.fromarray(draw_nuclei()).save(cells)
    note = "generated image, no reference answer"
    return {
        "caption": [Example(chest, None, note), Example(cells, None, note)],
        "report": [Example(chest, None, note)],
        "vqa": [
            Example(chest, "is there a lesion in this slice?", note),
            Example(cells, "what modality is this?", note),
        ],
        "classification": [Example(chest, None, note), Example(cells, None, note)],
        "segmentation": [Example(chest, "lesion", note), Example(cells, "nuclei", note)],
        "grounding": [Example(chest, "the lesion", note)],
        "detection": [Example(cells, None, note)],
    }


def draw_chest_slice(size: int = 256) -> np.ndarray:
    """(size, size) uint8: a body ellipse, two dark lungs and a bright round nodule in the right lung."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 10.0)
    image[((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.36) ** 2 < 1] = 140
    for cx in (0.32, 0.68):
        image[((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.25) ** 2 < 1] = 35
    image[(xx - 0.30) ** 2 + (yy - 0.58) ** 2 < 0.035**2] = 200
    noise = np.random.default_rng(0).normal(0.0, 6.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def draw_nuclei(size: int = 192, count: int = 9) -> np.ndarray:
    """(size, size, 3) uint8: blue Gaussian blobs on black, like a DAPI-stained fluorescence tile."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    blue = np.zeros((size, size), dtype=np.float32)
    for _ in range(count):
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
        radius = rng.uniform(0.04, 0.07) * size
        blue = np.maximum(blue, np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)))
    rgb = np.stack([blue * 40, blue * 90, blue * 255], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)
