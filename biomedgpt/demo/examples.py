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

from biomedgpt.serve.types import SERVED_TASKS
from biomedgpt.tasks import Task, get_task

DEFAULT_SHARDS = "data_shards/demo"


def fieldless_donors() -> tuple[str, ...]:
    """Served tasks whose prompt needs no field and whose answer is text (caption, report, classification):
    their images are whole, varied pictures, which a fieldless task without examples borrows."""
    return tuple(
        name for name in SERVED_TASKS if get_task(name).request_field is None and get_task(name).text_output
    )


@dataclass(frozen=True)
class Example:
    image: Path
    field: str | None = None
    """The value of the task's `request_field` (VQA question, grounding phrase, segmentation structure); None for
    fieldless tasks."""
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
    donor_tasks = fieldless_donors()
    for task in SERVED_TASKS:
        if not examples.get(task) and get_task(task).request_field is None:
            donors = [e for d in donor_tasks for e in examples.get(d, [])]
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
        if _empty_mask(get_task(sample.task), sample):
            continue  # an empty reference mask makes a dull example
        if sample.image is not None and len(by_source[sample.task][sample.source or "?"]) < per_task:
            by_source[sample.task][sample.source or "?"].append(sample)
    examples: Examples = {}
    for task, sources in by_source.items():
        chosen = _round_robin(list(sources.values()), per_task)
        examples[task] = [_write_example(sample, cache_dir) for sample in chosen]
    return examples


def _empty_mask(task: Task, sample) -> bool:
    """A mask task's sample whose reference mask is missing or empty."""
    if task.output_kind != "mask":
        return False
    return sample.mask is None or not np.any(task.reference(sample)[0])


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
    field = get_task(sample.task).request_value(sample)
    return Example(path, field, f"{sample.source or sample.key}: {reference_text(sample)}")


def reference_text(sample) -> str:
    """The sample's reference answer in words (`Task.reference`; a mask or a list of boxes is summarised, not
    printed), by the task's output kind."""
    task = get_task(sample.task)
    reference, _ = task.reference(sample)
    kind = task.output_kind
    if reference is None:  # a task with nothing to compare with
        return ""
    if kind == "mask" or isinstance(reference, np.ndarray):
        return f"mask of {int(np.asarray(reference).sum())} px"
    if kind == "objects":
        return f"{len(reference)} objects"
    if kind == "box":
        return "box " + ", ".join(f"{v:g}" for v in reference)
    return _short(reference)


def _short(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- generated examples ---------------------------------------------------------------------------------
GENERATED_FIELDS: dict[str, dict[str, str]] = {
    "generated-chest": {
        "question": "is there a lesion in this slice?",
        "structure": "lesion",
        "text": "the lesion",
    },
    "generated-nuclei": {"question": "what modality is this?", "structure": "nuclei"},
}
"""Per drawn image, the values of the request fields (`Task.request_field`) that make sense for it."""
GENERATED_BY_KIND: dict[str, tuple[str, ...]] = {
    "text": ("generated-chest", "generated-nuclei"),
    "answer": ("generated-chest", "generated-nuclei"),
    "label": ("generated-chest", "generated-nuclei"),
    "mask": ("generated-chest", "generated-nuclei"),
    "box": ("generated-chest",),
    "objects": ("generated-nuclei",),
}
"""Per output kind (`Task.output_kind`), the drawn images a task's tab offers: one nodule to find a box for, many
nuclei to detect."""


def generated_examples(cache_dir: Path) -> Examples:
    """Two drawn images (a chest-CT-like slice with a nodule, fluorescent nuclei) with fields for every served
    task: the images suited to its output kind, with the value of its request field for each (an image without
    one is left out; a task left with none gets the chest slice and its `field_example`)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: cache_dir / f"{name}.png" for name in GENERATED_FIELDS}
    Image.fromarray(draw_chest_slice()).save(paths["generated-chest"])
    Image.fromarray(draw_nuclei()).save(paths["generated-nuclei"])
    note = "generated image, no reference answer"
    examples: Examples = {}
    for name in SERVED_TASKS:
        task = get_task(name)
        field = task.request_field
        chosen = [
            Example(paths[image], None if field is None else GENERATED_FIELDS[image][field], note)
            for image in GENERATED_BY_KIND.get(task.output_kind, ("generated-chest",))
            if field is None or field in GENERATED_FIELDS[image]
        ]
        examples[name] = chosen or [
            Example(paths["generated-chest"], None if field is None else task.field_example, note)
        ]
    return examples


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
