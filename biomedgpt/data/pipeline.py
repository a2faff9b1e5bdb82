"""The streaming pipeline: webdataset shards -> task-formatted, collated batches.

Per DataLoader worker and epoch, `StreamingDataset.__iter__` builds these webdataset stages:

    shard list            brace patterns expanded; per-task lists trimmed with manifest.json when present
    -> wds.shuffle        of the shard list, seeded by (seed, epoch): the SAME order on every rank and
                          worker, so that the two splits below partition it
    -> split_by_node      ALWAYS explicit, with the rank and world size resolved once when the dataset is
                          built (arguments, else torch.distributed when initialized, else RANK/WORLD_SIZE,
                          else a single process); wds' own default raises under multi-node
    -> wds.split_by_worker
    -> wds.tarfile_to_samples(handler=...)   unreadable members, missing files and truncated tars are
                          logged, counted in `SkipCounter` (`skips.py`) and skipped: the epoch always finishes
    -> json + task filter -> wds.shuffle buffer, seeded by (seed, epoch, rank, worker, task)
    -> decode             `biomedgpt.data.schema.decode_sample`; failures logged, counted, skipped
    -> weighted mix       of the per-task streams (below)
    -> format             image -> normalized pixels at `image_size`; prompt from the task's templates;
                          target ids ending with </s>
    -> with_epoch(n)      `epoch_samples` per worker when set
    -> wds.batched        `collate` (biomedgpt.data.collate): right-padded prompt and target ids, labels = -100
                          on padding, patch_masks False for text-only samples, code_masks for image-code targets

Resampled mode (multi-node): each (rank, worker, task) draws shards with replacement from an rng
seeded by (seed, epoch, rank, worker, task) instead of shuffling and splitting, and `epoch_samples`
is required so that every rank yields exactly that many samples per worker.

Mixing (`DataConfig.mixture`): one stream per task with weight > 0 (tasks not named are dropped),
interleaved by a seeded weighted draw (webdataset's RandomMix, but seeded). Per-task streams keep
the proportions exact whatever the shards hold; with per-task shards (one converter per dataset)
each stream reads only its own shards, via the manifest. In resampled mode streams never end and the
ratio holds throughout; in a single pass an exhausted stream drops out and the rest continue, so
every sample is still seen once. An empty mixture reads the shards as they come (one stream).

Randomness: prompt templates and text-infilling masks come from an rng seeded by (seed, epoch, key),
so a sample gets the same prompt whatever the worker layout; evaluation uses (seed, key) only.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from biomedgpt.data.collate import Collator, resize_square, to_uint8
from biomedgpt.data.config import DataConfig
from biomedgpt.data.schema import Sample, decode_sample
from biomedgpt.data.skips import SkipCounter, SkipHandler
from biomedgpt.tasks import TargetTooLongError, TaskUnavailableError, get_task
from biomedgpt.tasks.base import layout_of

log = logging.getLogger(__name__)

PROMPT_MODES = ("train", "fixed", "eval")


def _seed(*parts: object) -> int:
    """A 63-bit seed from any parts, the same in every process (unlike `hash` of a str)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


# ---------------------------------------------------------------------------------------------
# Shards, ranks


def expand_shards(patterns: Iterable[str], *, split: str | None = None) -> list[str]:
    """Shard patterns -> shard list, order kept, duplicates dropped.

    A pattern is a brace pattern (`d/x-train-{000000..000003}.tar`), a glob (`d/*-train-*.tar`), a URL, or a
    folder written by `biomedgpt shard`, which stands for its `*-{split}-*.tar` files (all tars without a split).
    """
    import glob
    import os

    import braceexpand

    urls: dict[str, None] = {}
    for pattern in patterns:
        if os.path.isdir(pattern):
            infix = f"-{split}-" if split else ""
            for name in sorted(os.listdir(pattern)):
                if name.endswith(".tar") and infix in name and not name.startswith("."):
                    urls.setdefault(os.path.join(pattern, name), None)
            continue
        for url in braceexpand.braceexpand(pattern):
            matches = sorted(glob.glob(url)) if glob.has_magic(url) and "://" not in url else [url]
            for match in matches:
                urls.setdefault(match, None)
    return list(urls)


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the arguments, else torch.distributed when initialized, else the
    RANK/WORLD_SIZE environment variables, else (0, 1)."""
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            rank, world_size = 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    return rank, world_size


def split_by_node(src: Iterable[Any], *, rank: int, world_size: int) -> Iterator[Any]:
    """Every `world_size`-th shard starting at `rank` (wds.split_by_node with an explicit rank)."""
    return islice(src, rank, None, world_size)


def shards_with_task(urls: Sequence[str], task: str) -> list[str]:
    """The shards that may hold samples of `task`: a local shard whose folder's manifest.json lists
    it without that task is dropped; everything else (URLs, no manifest, unlisted) is kept."""
    from biomedgpt.data.shards import read_manifest

    tasks_by_dir: dict[Path, dict[str, dict[str, int]] | None] = {}
    kept = []
    for url in urls:
        path = Path(url[len("file:") :] if url.startswith("file:") else url)
        if "://" in url or not path.is_file():
            kept.append(url)
            continue
        if path.parent not in tasks_by_dir:
            try:
                doc = read_manifest(path.parent)
                tasks_by_dir[path.parent] = {s["file"]: s.get("tasks", {}) for s in doc["shards"]}
            except (OSError, ValueError, KeyError, TypeError):
                tasks_by_dir[path.parent] = None
        listed = tasks_by_dir[path.parent]
        if listed is None or path.name not in listed or listed[path.name].get(task, 0) > 0:
            kept.append(url)
    return kept


def _urls(urls: Sequence[str]) -> Iterator[dict[str, str]]:
    return ({"url": url} for url in urls)


def _resampled_urls(urls: Sequence[str], seed: int) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    while True:
        yield {"url": urls[rng.randrange(len(urls))]}


def weighted_mix(
    sources: Sequence[Iterator[Any]], weights: Sequence[float], *, rng: random.Random
) -> Iterator[Any]:
    """Draw the next item from a source picked with probability ∝ weight; exhausted sources drop out."""
    sources, weights = list(sources), list(weights)
    while sources:
        i = rng.choices(range(len(sources)), weights=weights)[0]
        try:
            yield next(sources[i])
        except StopIteration:
            del sources[i], weights[i]


# ---------------------------------------------------------------------------------------------
# Decoding and formatting stages


class ParseJson:
    """Parse each group's json member once (decode_sample accepts the dict) and keep one task.

    Also drops the mask member of tasks that do not use masks (grounding and detection samples carry
    one in the synthetic data): decoding a png nobody reads is a third of the decode time there.
    """

    def __init__(self, counter: SkipCounter, task: str | None) -> None:
        self.counter, self.task = counter, task

    def __call__(self, groups: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        import json

        for group in groups:
            if "json" not in group:  # e.g. the tail of a truncated tar
                members = sorted(k for k in group if not k.startswith("__"))
                self.counter.add(
                    "sample", f"{group.get('__key__')} in {group.get('__url__')}: no json member {members}"
                )
                continue
            try:
                group["json"] = doc = json.loads(group["json"])
                task = doc["task"]
                if doc.get("mask_member") and not get_task(task).uses_mask:
                    group.pop(doc["mask_member"], None)
                    doc["mask_member"] = None
            except Exception as err:
                self.counter.add(
                    "sample", f"{group.get('__key__')} in {group.get('__url__')}: bad json: {err}"
                )
                continue
            if self.task is None or task == self.task:
                yield group


class Decode:
    """`decode_sample` on each group; a group that does not decode is logged, counted and skipped."""

    def __init__(self, counter: SkipCounter) -> None:
        self.counter = counter

    def __call__(self, groups: Iterable[dict[str, Any]]) -> Iterator[Sample]:
        for group in groups:
            try:
                yield decode_sample(group)
            except Exception as err:
                self.counter.add("sample", f"{group.get('__key__')} in {group.get('__url__')}: {err}")


class Formatter:
    """A decoded `Sample` -> the model's view of it: prompt ids, target ids, the image at the model's size."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        image_size: int,
        max_prompt_tokens: int,
        max_target_tokens: int,
        prompt_mode: str,
        training: bool,
        seed: int,
        counter: SkipCounter,
        augment: bool = False,
        served_prompt_share: float | None = None,
    ) -> None:
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {prompt_mode!r}")
        self.tokenizer, self.image_size = tokenizer, image_size
        self.max_prompt_tokens, self.max_target_tokens = max_prompt_tokens, max_target_tokens
        self.prompt_mode, self.training, self.seed, self.counter = prompt_mode, training, seed, counter
        self.augment = augment and training
        self.served_prompt_share = served_prompt_share
        self._views: dict[str, int] = {}  # how often each sample was augmented: a new view every time

    def __call__(self, samples: Iterable[Sample], *, epoch: int = 0) -> Iterator[dict[str, Any]]:
        for sample in samples:
            try:
                yield self.format(sample, epoch=epoch)
            except TaskUnavailableError as err:
                self.counter.add("unavailable", f"{sample.key}: {err}")
            except TargetTooLongError as err:
                self.counter.add("too_long", f"{sample.key}: {err}; raise data.max_target_tokens")
            except (ValueError, KeyError, IndexError) as err:  # bad data; programming errors propagate
                self.counter.add("format", f"{sample.key} ({sample.task}): {type(err).__name__}: {err}")

    def format(self, sample: Sample, *, epoch: int = 0) -> dict[str, Any]:
        task = get_task(sample.task)
        rng = random.Random(f"{self.seed}/{epoch if self.training else 'eval'}/{sample.key}")
        template = task.choose_template(
            self.prompt_mode, rng=rng, key=sample.key, served_share=self.served_prompt_share
        )
        eos = layout_of(self.tokenizer).eos_id
        input_ids = self.tokenizer.encode_prompt(task.build_prompt(sample, template=template, rng=rng))
        if len(input_ids) > self.max_prompt_tokens:  # keep <s> ... </s>; cut the text
            input_ids = [*input_ids[: self.max_prompt_tokens - 1], eos]
        target_ids = task.build_target(
            sample, self.tokenizer, image_size=self.image_size, max_tokens=self.max_target_tokens
        )
        if len(target_ids) > self.max_target_tokens:
            raise TargetTooLongError(f"{len(target_ids)} target tokens > {self.max_target_tokens}")
        image = None
        if sample.image is not None and task.needs_image:
            image = to_uint8(sample.image)
            if self.augment:
                from biomedgpt.data.augment import augment

                # A resampled stream repeats samples within one epoch: the view count keeps each repeat new.
                view = self._views[sample.key] = self._views.get(sample.key, 0) + 1
                image = augment(image, sample.task, random.Random(f"{self.seed}/{epoch}/{sample.key}/{view}"))
            image = resize_square(image, self.image_size)  # normalized in collate
        orig_size = None if sample.image is None else (int(sample.image.shape[1]), int(sample.image.shape[0]))
        return {
            "key": sample.key,
            "task": sample.task,
            "input_ids": input_ids,
            "target_ids": target_ids,
            "loss_mask": None,  # None: every target token counts
            "image": image,  # uint8 (S, S) or (S, S, 3), or None
            "orig_size": orig_size,
            "code_mask": task.constraint == "codes",
        }


class StreamingDataset(IterableDataset):
    """An IterableDataset over shards that builds the webdataset stages per worker and epoch.

    Holds only picklable settings (the stages are built inside `__iter__`), so DataLoader workers
    work with fork and spawn. `set_epoch(e)` before iterating reshuffles; iterating again in the
    same process (num_workers=0, persistent workers) moves to the next epoch by itself.
    """

    def __init__(
        self,
        *,
        streams: list[tuple[str | None, list[str], float]],
        formatter: Formatter,
        collator: Collator | None,
        batch_size: int,
        training: bool,
        rank: int,
        world_size: int,
        seed: int,
        shuffle_buffer: int,
        resampled: bool,
        epoch_samples: int | None,
    ) -> None:
        super().__init__()
        self.streams, self.formatter, self.collator = streams, formatter, collator
        self.batch_size, self.training = batch_size, training
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer, self.resampled, self.epoch_samples = shuffle_buffer, resampled, epoch_samples
        self.skips = formatter.counter
        self._epoch, self._iterations = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch, self._iterations = epoch, 0

    def __iter__(self) -> Iterator[Any]:
        epoch = self._epoch + self._iterations
        self._iterations += 1
        worker, _ = _worker()
        samples = wds.DataPipeline(
            functools.partial(self._mixed, epoch, worker),
            functools.partial(self.formatter, epoch=epoch),
        )
        if self.epoch_samples is not None:
            samples = samples.with_epoch(self.epoch_samples)
        if self.collator is None:
            return iter(samples)
        return iter(wds.DataPipeline(samples, wds.batched(self.batch_size, collation_fn=self.collator)))

    def _mixed(self, epoch: int, worker: int) -> Iterator[Sample]:
        buffer = self.shuffle_buffer // len(self.streams) if self.training else 0
        sources = [iter(self._stream(task, urls, epoch, worker, buffer)) for task, urls, _ in self.streams]
        if len(sources) == 1:
            return sources[0]
        rng = random.Random(_seed(self.seed, epoch, self.rank, worker, "mix"))
        return weighted_mix(sources, [weight for _, _, weight in self.streams], rng=rng)

    def _stream(self, task: str | None, urls: list[str], epoch: int, worker: int, buffer: int) -> Any:
        skips = self.skips
        if self.resampled:
            shards: list[Any] = [
                functools.partial(_resampled_urls, urls, _seed(self.seed, epoch, self.rank, worker, task))
            ]
        else:
            shards = [functools.partial(_urls, urls)]
            if self.training:
                shards.append(wds.shuffle(len(urls), initial=len(urls), seed=_seed(self.seed, epoch, task)))
            shards += [
                functools.partial(split_by_node, rank=self.rank, world_size=self.world_size),
                wds.split_by_worker,
            ]
        stages = [*shards, wds.tarfile_to_samples(handler=SkipHandler(skips, "tar")), ParseJson(skips, task)]
        if buffer > 0:
            stages.append(
                wds.shuffle(buffer, initial=buffer, seed=_seed(self.seed, epoch, self.rank, worker, task))
            )
        stages.append(Decode(skips))
        return wds.DataPipeline(*stages)


class StreamingLoader(DataLoader):
    """A DataLoader that tells its dataset the epoch at every `iter()` (0, 1, 2, ...)."""

    def __init__(self, dataset: StreamingDataset, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self._next_epoch = 0

    @property
    def skips(self) -> SkipCounter:
        return self.dataset.skips

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = epoch

    def __iter__(self) -> Any:
        self.dataset.set_epoch(self._next_epoch)
        self._next_epoch += 1
        return super().__iter__()


def _task_streams(cfg: DataConfig, urls: list[str]) -> list[tuple[str | None, list[str], float]]:
    if not cfg.mixture:
        return [(None, urls, 1.0)]
    streams = []
    for name, weight in cfg.mixture.items():
        task = get_task(name)
        if weight <= 0:
            continue
        task.check_available()
        task_urls = shards_with_task(urls, name)
        if task_urls:
            streams.append((name, task_urls, float(weight)))
        else:
            log.warning("mixture task %s has weight %g but no shard holds it (manifest.json)", name, weight)
    if not streams:
        raise ValueError(f"no shard holds any task of data.mixture ({', '.join(cfg.mixture)})")
    return streams


def build_dataset(
    cfg: DataConfig,
    *,
    split: str,
    tokenizer: Any,
    image_size: int,
    training: bool,
    rank: int | None = None,
    world_size: int | None = None,
    shards: Sequence[str] | None = None,
    prompt_mode: str | None = None,
    batched: bool = True,
) -> StreamingDataset:
    """The streaming dataset of `split` ("train": cfg.shards, "val": cfg.val_shards; `shards` overrides).

    Yields `collate`d batches of cfg.batch_size (single formatted samples when `batched=False`).
    `training` turns on shard and sample shuffling, training templates and resampling;
    `prompt_mode` is "train" (a random training paraphrase), "fixed" (BiomedGPT's prompt) or "eval"
    (a held-out paraphrase); default: "train" when training, else "fixed".
    """
    if shards is None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val' (or pass shards=...), got {split!r}")
        shards = cfg.shards if split == "train" else cfg.val_shards
    urls = expand_shards(shards, split=split if split in ("train", "val", "test") else None)
    if not urls:
        raise ValueError(
            f"no shards for split {split!r}: set data.{'shards' if split == 'train' else 'val_shards'}"
        )
    rank, world_size = resolve_rank(rank, world_size)
    resampled = cfg.resampled and training
    if resampled and cfg.epoch_samples is None:
        raise ValueError(
            "data.resampled streams forever: set data.epoch_samples (samples per worker and epoch)"
        )
    if not resampled and len(urls) < world_size:
        log.warning("%d shards for %d ranks: some ranks get no data", len(urls), world_size)
    counter = SkipCounter()
    formatter = Formatter(
        tokenizer,
        image_size=image_size,
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_target_tokens=cfg.max_target_tokens,
        prompt_mode=prompt_mode or ("train" if training else "fixed"),
        training=training,
        seed=cfg.seed,
        counter=counter,
        augment=cfg.augment,
        served_prompt_share=cfg.served_prompt_share,
    )
    collator = Collator(pad_token_id=layout_of(tokenizer).pad_id, image_size=image_size) if batched else None
    return StreamingDataset(
        streams=_task_streams(cfg, urls),
        formatter=formatter,
        collator=collator,
        batch_size=cfg.batch_size,
        training=training,
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
        shuffle_buffer=cfg.shuffle_buffer,
        resampled=resampled,
        epoch_samples=cfg.epoch_samples if training else None,
    )


def _unbatched(item: Any) -> Any:
    return item  # batches are made in the pipeline (wds.batched); DataLoader only moves them


def build_loader(
    cfg: DataConfig,
    *,
    split: str,
    tokenizer: Any,
    image_size: int,
    training: bool,
    rank: int | None = None,
    world_size: int | None = None,
    shards: Sequence[str] | None = None,
    prompt_mode: str | None = None,
    num_workers: int | None = None,
    **loader_kwargs: Any,
) -> StreamingLoader:
    """A DataLoader over `build_dataset(...)` with cfg.num_workers workers (override: `num_workers`).

    Batching happens inside each worker (wds.batched + `collate`), so the loader runs with
    batch_size=None; extra keyword arguments go to torch's DataLoader (pin_memory, ...).
    """
    dataset = build_dataset(
        cfg,
        split=split,
        tokenizer=tokenizer,
        image_size=image_size,
        training=training,
        rank=rank,
        world_size=world_size,
        shards=shards,
        prompt_mode=prompt_mode,
    )
    workers = cfg.num_workers if num_workers is None else num_workers
    return StreamingLoader(
        dataset, batch_size=None, num_workers=workers, collate_fn=_unbatched, **loader_kwargs
    )


__all__ = [
    "PROMPT_MODES",
    "Formatter",
    "StreamingDataset",
    "StreamingLoader",
    "build_dataset",
    "build_loader",
    "expand_shards",
    "resolve_rank",
    "shards_with_task",
    "split_by_node",
    "weighted_mix",
]
