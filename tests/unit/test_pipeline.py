"""The streaming pipeline: splitting, resampling, corrupt data, mixing and formatting, on synthetic shards."""

from __future__ import annotations

import collections
import io
import logging
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from biomedgpt.data.collate import image_to_pixels, normalize_into
from biomedgpt.data.config import DataConfig
from biomedgpt.data.pipeline import build_dataset, build_loader, resolve_rank, weighted_mix
from biomedgpt.data.shards import write_dataset
from biomedgpt.data.skips import SkipCounter
from biomedgpt.ingest.synthetic import synthetic_samples
from biomedgpt.tasks import TaskUnavailableError, UnknownTaskError, get_task
from biomedgpt.tokenization.locations import bins_to_box

IMAGE_SIZE = 32
# Tasks whose targets need no optional component (image VQ weights, mask codec) and fit 64 tokens.
TASKS = (
    "caption",
    "report",
    "vqa",
    "classification",
    "grounding",
    "detection",
    "text_infilling",
    "summarization",
)


@pytest.fixture(scope="module")
def tokenizer():
    from biomedgpt.tokenization.unified import BiomedGPTTokenizer

    return BiomedGPTTokenizer.load_default()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(shard folder, {key: Sample} of the train split, number of train shards)."""
    samples = [s for s in synthetic_samples(260, image_size=IMAGE_SIZE) if s.task in TASKS]
    out = tmp_path_factory.mktemp("shards")
    summary = write_dataset(samples, out, name="syn", max_samples_per_shard=20, progress=False)
    train = {s.key: s for s in samples if s.split == "train"}
    num_shards = sum(1 for shard in summary.shards if shard.split == "train")
    assert num_shards >= 8
    return out, train, num_shards


def config(corpus, **overrides) -> DataConfig:
    folder, _, num_shards = corpus
    fields = {
        "shards": [str(folder / f"syn-train-{{000000..{num_shards - 1:06d}}}.tar")],
        "batch_size": 8,
        "shuffle_buffer": 32,
        "num_workers": 2,
        **overrides,
    }
    return DataConfig(**fields)


def loader_keys(loader) -> list[str]:
    return [key for batch in loader for key in batch["keys"]]


# --- (a) splitting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_every_sample_once_per_epoch_across_ranks_and_workers(corpus, tokenizer, training):
    _, train, _ = corpus
    cfg = config(corpus)
    loaders = [
        build_loader(
            cfg,
            split="train",
            tokenizer=tokenizer,
            image_size=IMAGE_SIZE,
            training=training,
            rank=r,
            world_size=2,
        )
        for r in range(2)
    ]
    epochs = []
    for _ in range(2):
        per_rank = [loader_keys(loader) for loader in loaders]
        assert all(per_rank), "every rank gets data"
        keys = [key for rank_keys in per_rank for key in rank_keys]
        assert sorted(keys) == sorted(train), "each train sample exactly once"
        epochs.append(keys)
    assert all(loader.skips.total == 0 for loader in loaders)
    if training:
        assert epochs[0] != epochs[1], "a new epoch reshuffles"
    else:
        assert epochs[0] == epochs[1], "evaluation order is fixed"


def test_dataloader_workers_started_with_spawn(corpus, tokenizer):
    _, train, _ = corpus
    cfg = config(corpus, num_workers=1)
    loader = build_loader(
        cfg,
        split="train",
        tokenizer=tokenizer,
        image_size=IMAGE_SIZE,
        training=True,
        rank=0,
        world_size=1,
        multiprocessing_context="spawn",
    )
    assert sorted(loader_keys(loader)) == sorted(train)


# --- (b) resampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_resampled_epochs_have_exactly_the_requested_size_on_every_rank(corpus, tokenizer, workers):
    cfg = config(corpus, resampled=True, epoch_samples=10, batch_size=4)
    for rank in range(2):
        loader = build_loader(
            cfg,
            split="train",
            tokenizer=tokenizer,
            image_size=IMAGE_SIZE,
            training=True,
            rank=rank,
            world_size=2,
            num_workers=workers,
        )
        for _ in range(2):
            assert len(loader_keys(loader)) == 10 * max(workers, 1)


def test_resampled_needs_epoch_samples(corpus, tokenizer):
    with pytest.raises(ValueError, match="epoch_samples"):
        build_dataset(
            config(corpus, resampled=True), split="train", tokenizer=tokenizer, image_size=32, training=True
        )


def test_rank_resolution(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_rank() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank() == (1, 4)
    assert resolve_rank(2, 3) == (2, 3)
    with pytest.raises(ValueError):
        resolve_rank(1, None)
    with pytest.raises(ValueError):
        resolve_rank(3, 3)


# --- (c) corrupt data --------------------------------------------------------------------------------


def _complete_keys_before(path: Path, cut: int) -> set[str]:
    """Keys whose members all end before byte `cut` (webdataset groups consecutive members)."""
    ends: dict[str, int] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key = member.name.split(".", 1)[0]
            ends[key] = max(ends.get(key, 0), member.offset_data + member.size)
    return {key for key, end in ends.items() if end <= cut}


def _rewrite_with_garbage(src: Path, dst: Path) -> str:
    """Copy `src` with the png of its first image sample replaced by garbage; returns that key."""
    victim = None
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()
            if victim is None and member.name.endswith(".png") and ".mask." not in member.name:
                victim = member.name.split(".", 1)[0]
                data = b"\x89PNG\r\n\x1a\n" + b"this is not a png" * 20
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
    assert victim is not None
    return victim


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_members_and_truncated_tars_are_logged_counted_and_skipped(
    corpus, tokenizer, tmp_path, caplog, workers
):
    folder, train, _ = corpus
    shard = [folder / f"syn-train-{i:06d}.tar" for i in range(4)]
    good = [tmp_path / "a.tar", tmp_path / "b.tar"]
    for src, dst in zip(shard[:2], good):
        shutil.copy(src, dst)
    with tarfile.open(shard[2]) as tar:
        json_member = [m for m in tar.getmembers() if m.name.endswith(".json")][2]
    cut = json_member.offset_data + json_member.size // 2
    (tmp_path / "c-truncated.tar").write_bytes(shard[2].read_bytes()[:cut])
    victim = _rewrite_with_garbage(shard[3], tmp_path / "d-garbage.tar")

    def keys_of(path: Path) -> set[str]:
        with tarfile.open(path) as tar:
            return {m.name.split(".", 1)[0] for m in tar.getmembers()}

    expected = keys_of(good[0]) | keys_of(good[1]) | _complete_keys_before(shard[2], cut)
    expected |= keys_of(shard[3]) - {victim}
    shards = [str(p) for p in (*good, tmp_path / "c-truncated.tar", tmp_path / "d-garbage.tar")]
    shards.append(str(tmp_path / "e-missing.tar"))
    cfg = config(corpus, shards=shards)
    caplog.set_level(logging.WARNING, logger="biomedgpt.data.skips")  # the skips are logged there
    loader = build_loader(
        cfg, split="train", tokenizer=tokenizer, image_size=IMAGE_SIZE, training=True, num_workers=workers
    )
    keys = loader_keys(loader)
    assert sorted(keys) == sorted(expected), "the epoch finishes with every good sample, once"
    assert set(keys) <= set(train)
    counts = loader.skips.counts()
    assert counts["tar"] >= 2  # the truncation and the missing file
    assert counts["sample"] >= 2  # the half-read sample and the garbage png
    if workers == 0:  # worker processes log to their own stderr
        messages = "\n".join(r.getMessage() for r in caplog.records)
        assert "skipped (tar" in messages and "e-missing.tar" in messages
        assert f"skipped (sample, #1 in this process): {victim}" in messages or victim in messages


def test_skip_counter_pickles_outside_process_start_as_a_snapshot():
    counter = SkipCounter()
    counter.add("format", "x")
    copy = pickle.loads(pickle.dumps(counter))
    copy.add("format", "y")
    assert counter.counts()["format"] == 1 and copy.counts()["format"] == 2


# --- (d) mixing --------------------------------------------------------------------------------------


def test_zero_weight_tasks_never_appear(corpus, tokenizer):
    _, train, _ = corpus
    cfg = config(corpus, mixture={"vqa": 1.0, "caption": 0.0})
    dataset = build_dataset(
        cfg, split="train", tokenizer=tokenizer, image_size=IMAGE_SIZE, training=True, batched=False
    )
    tasks = [sample["task"] for sample in dataset]
    assert tasks and set(tasks) == {"vqa"}
    assert len(tasks) == sum(1 for s in train.values() if s.task == "vqa")


def test_mixture_weights_set_the_task_ratio(corpus, tokenizer):
    cfg = config(corpus, mixture={"vqa": 3.0, "caption": 1.0}, resampled=True, epoch_samples=800)
    dataset = build_dataset(
        cfg, split="train", tokenizer=tokenizer, image_size=IMAGE_SIZE, training=True, batched=False
    )
    counts = collections.Counter(sample["task"] for sample in dataset)
    assert set(counts) == {"vqa", "caption"} and sum(counts.values()) == 800
    # Binomial(800, 0.75): sd = sqrt(800 * 0.75 * 0.25) / 800 = 0.0153; 0.06 is about 4 sd.
    assert abs(counts["vqa"] / 800 - 0.75) < 0.06


def test_mixture_names_are_checked(corpus, tokenizer, monkeypatch):
    with pytest.raises(UnknownTaskError, match="did you mean 'vqa'"):
        build_dataset(
            config(corpus, mixture={"vqaa": 1.0}),
            split="train",
            tokenizer=tokenizer,
            image_size=32,
            training=True,
        )

    def unavailable(self):
        raise TaskUnavailableError("no weights")

    monkeypatch.setattr(type(get_task("image_infilling")), "check_available", unavailable)
    with pytest.raises(TaskUnavailableError):
        build_dataset(
            config(corpus, mixture={"image_infilling": 1.0}),
            split="train",
            tokenizer=tokenizer,
            image_size=32,
            training=True,
        )


def test_weighted_mix_is_seeded_and_drains_every_source():
    import random

    def draw(seed):
        return list(weighted_mix([iter("aaaa"), iter("bb")], [1.0, 1.0], rng=random.Random(seed)))

    assert draw(1) == draw(1)
    assert sorted(draw(2)) == list("aaaabb")


# --- (e) formatting ----------------------------------------------------------------------------------


def test_batches_have_bos_eos_prompts_eos_targets_and_labels_masked_on_padding(corpus, tokenizer):
    layout = tokenizer.layout
    cfg = config(corpus, batch_size=16)
    kwargs = {"split": "train", "tokenizer": tokenizer, "image_size": IMAGE_SIZE, "training": True}
    samples = {s["key"]: s for s in build_dataset(cfg, batched=False, **kwargs)}
    seen_text_only = seen_image = False
    for batch in build_dataset(cfg, **kwargs):
        assert batch["patch_images"].shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
        for i, key in enumerate(batch["keys"]):
            prompt, target = samples[key]["input_ids"], samples[key]["target_ids"]
            assert prompt[0] == layout.bos_id and prompt[-1] == layout.eos_id
            assert target[-1] == layout.eos_id
            row_ids, row_mask = batch["input_ids"][i], batch["attention_mask"][i]
            assert row_ids[: len(prompt)].tolist() == prompt and row_mask.sum() == len(prompt)
            assert (row_ids[len(prompt) :] == layout.pad_id).all()
            labels = batch["labels"][i]
            assert labels[: len(target)].tolist() == target
            assert (labels[len(target) :] == -100).all(), "-100 exactly on padding"
            if samples[key]["image"] is None:
                seen_text_only = True
                assert not batch["patch_masks"][i] and (batch["patch_images"][i] == 0).all()
            else:
                seen_image = True
                assert batch["patch_masks"][i]
        assert not batch["code_masks"].any()
    assert seen_text_only and seen_image


def test_box_targets_decode_back_within_one_bin(corpus, tokenizer):
    _, train, _ = corpus
    layout = tokenizer.layout
    cfg = config(corpus, mixture={"grounding": 1.0, "detection": 1.0})
    dataset = build_dataset(
        cfg, split="train", tokenizer=tokenizer, image_size=IMAGE_SIZE, training=True, batched=False
    )
    checked = 0
    for sample in dataset:
        original = train[sample["key"]]
        width, height = sample["orig_size"]
        bins = [layout.bin_index(t) for t in sample["target_ids"][:4]]
        box = bins_to_box(bins, width=width, height=height)
        want = min(original.fields["boxes"], key=lambda b: (b["box"][1], b["box"][0]))["box"]
        if sample["task"] == "grounding":
            want = original.fields["boxes"][0]["box"]
        step = max(width, height) / (layout.num_bins - 1)
        assert np.allclose(box, want, atol=step)
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("mode", ["fixed", "eval"])
def test_prompt_modes(corpus, tokenizer, mode):
    cfg = config(corpus, mixture={"caption": 1.0})
    dataset = build_dataset(
        cfg,
        split="train",
        tokenizer=tokenizer,
        image_size=32,
        training=False,
        prompt_mode=mode,
        batched=False,
    )
    task = get_task("caption")
    allowed = {task.prompt} if mode == "fixed" else set(task.eval_templates)
    prompts = {tokenizer.decode_text(s["input_ids"]) for s in dataset}
    assert prompts and prompts <= allowed


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 256, (50, 70), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8),
        np.random.default_rng(2).integers(0, 65536, (48, 48), dtype=np.uint16),
        np.random.default_rng(3).random((20, 24)),
        np.random.default_rng(4).integers(0, 256, (32, 32), dtype=np.uint8),
    ],
    ids=["gray", "rgb", "uint16", "float", "same-size"],
)
def test_pixels_match_the_model_processor_exactly(image):
    from biomedgpt.model.image_processing import BiomedGPTImageProcessor

    expected = BiomedGPTImageProcessor(image_size=32).preprocess_one(image)
    pixels = image_to_pixels(image, 32)
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, expected)
    ends = normalize_into(np.array([[0, 255]], np.uint8), np.empty((3, 1, 2), np.float32))
    assert (ends[:, 0, 0] == -1.0).all() and (ends[:, 0, 1] == 1.0).all()
