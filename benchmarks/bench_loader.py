"""Data loading throughput: our webdataset pipeline vs a plain map-style torch Dataset, same files, same run.

Both read the same synthetic shards (image tasks only: caption, report, vqa, classification,
grounding, detection) through ONE DataLoader worker process and share the transform, tokenization and
collation (`Formatter.format` + `Collator` from biomedgpt.data.pipeline), so the ratio measures the
reading/decoding pipeline around them:

- ours: `build_loader` (shard shuffle, split_by_node/worker, tar streaming, shuffle buffer,
  `decode_sample` with schema validation, task formatting, batching in the worker);
- peer: a `torch.utils.data.Dataset` that indexes the tar members once (tarfile), then per item
  seeks to the json and image members, decodes the png with PIL and formats the sample; DataLoader
  does shuffling and batching.

Per image size, an untimed epoch warms each (persistent) worker up, then timed epochs alternate
between the two loaders (so both see the same machine load); each reports
samples per second of wall clock and samples per CPU-second of the worker process (its
`time.process_time`, stamped by the collate function): the second is "per core" and depends far
less on what else runs on the machine (caches and memory bandwidth are still shared). Prints one JSON line per run and a summary line per size
with the best of `--repeats` and the ratio ours / peer; the goal is >= 300 samples per core-second
at 384 px.

    .venv/bin/python benchmarks/bench_loader.py                      # 256 and 384 px, 256 px sources
    .venv/bin/python benchmarks/bench_loader.py --source-size 512 --sizes 384
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from biomedgpt.data.collate import Collator
from biomedgpt.data.config import DataConfig
from biomedgpt.data.pipeline import Formatter, build_loader
from biomedgpt.data.schema import RESERVED_KEYS, Sample
from biomedgpt.data.skips import SkipCounter

IMAGE_TASKS = ("caption", "report", "vqa", "classification", "grounding", "detection")
GOAL_PER_CORE = 300.0


class TimedCollator(Collator):
    """`Collator` that stamps each batch with the worker's CPU time (seconds) after collating it."""

    def __call__(self, samples: Any) -> dict[str, Any]:
        batch = super().__call__(samples)
        batch["cpu_time"] = time.process_time()
        return batch


class TarMapDataset(Dataset):
    """The peer: random access into tars by member offsets, PIL decode, the same formatting."""

    def __init__(self, paths: list[str], formatter: Formatter) -> None:
        self.formatter = formatter
        self.items: list[tuple[str, str, dict[str, tuple[int, int]]]] = []
        for path in paths:
            groups: dict[str, dict[str, tuple[int, int]]] = {}
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    key, ext = member.name.split(".", 1)
                    groups.setdefault(key, {})[ext] = (member.offset_data, member.size)
            self.items.extend((path, key, members) for key, members in groups.items())
        self._files: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, path: str, where: tuple[int, int]) -> bytes:
        handle = self._files.get(path)
        if handle is None:
            handle = self._files[path] = open(path, "rb")  # noqa: SIM115  (kept open per worker)
        handle.seek(where[0])
        return handle.read(where[1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        path, key, members = self.items[index]
        doc = json.loads(self._read(path, members["json"]))
        image = None
        if "png" in members:
            with Image.open(io.BytesIO(self._read(path, members["png"]))) as img:
                image = np.asarray(img)
        fields = {k: v for k, v in doc.items() if k not in RESERVED_KEYS}
        sample = Sample(key=key, task=doc["task"], split=doc["split"], image=image, fields=fields)
        return self.formatter.format(sample)


def make_shards(folder: Path, *, samples: int, source_size: int) -> list[str]:
    from biomedgpt.data.shards import write_dataset
    from biomedgpt.ingest.synthetic import synthetic_samples

    stream = (s for s in synthetic_samples(samples, image_size=source_size) if s.task in IMAGE_TASKS)
    write_dataset(stream, folder, name="bench", max_samples_per_shard=100, progress=False, overwrite=True)
    return sorted(str(p) for p in folder.glob("bench-train-*.tar"))


def data_config(shards: list[str], batch_size: int) -> DataConfig:
    return DataConfig(
        shards=shards,
        batch_size=batch_size,
        num_workers=1,
        shuffle_buffer=256,
        max_prompt_tokens=128,
        max_target_tokens=128,
    )


def ours_loader(shards: list[str], tokenizer: Any, *, image_size: int, batch_size: int) -> DataLoader:
    loader = build_loader(
        data_config(shards, batch_size),
        split="train",
        tokenizer=tokenizer,
        image_size=image_size,
        training=True,
        rank=0,
        world_size=1,
        persistent_workers=True,
    )
    collator = loader.dataset.collator
    loader.dataset.collator = TimedCollator(pad_token_id=collator.pad_token_id, image_size=image_size)
    return loader


def peer_loader(shards: list[str], tokenizer: Any, *, image_size: int, batch_size: int) -> DataLoader:
    cfg = data_config(shards, batch_size)
    formatter = Formatter(
        tokenizer,
        image_size=image_size,
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_target_tokens=cfg.max_target_tokens,
        prompt_mode="train",
        training=True,
        seed=0,
        counter=SkipCounter(),
    )
    return DataLoader(
        TarMapDataset(shards, formatter),
        batch_size=batch_size,
        shuffle=True,
        num_workers=1,
        collate_fn=TimedCollator(pad_token_id=tokenizer.layout.pad_id, image_size=image_size),
        persistent_workers=True,
    )


def run_epoch(loader: DataLoader) -> tuple[int, float, float]:
    """(samples, wall seconds, worker CPU time at the last batch)."""
    start = time.perf_counter()
    count, cpu = 0, 0.0
    for batch in loader:
        count += len(batch["keys"])
        cpu = batch["cpu_time"]
    return count, time.perf_counter() - start, cpu


def measure(loaders: dict[str, DataLoader], *, repeats: int) -> dict[str, list[dict[str, float]]]:
    """Timed epochs, alternating between the loaders so that both see the same machine load."""
    cpu_before = {impl: run_epoch(loader)[2] for impl, loader in loaders.items()}  # warm-up epochs
    runs: dict[str, list[dict[str, float]]] = {impl: [] for impl in loaders}
    for _ in range(repeats):
        for impl, loader in loaders.items():
            count, wall, cpu_after = run_epoch(loader)
            runs[impl].append(
                {
                    "samples": count,
                    "samples_per_s_wall": count / wall,
                    "samples_per_cpu_s": count / max(cpu_after - cpu_before[impl], 1e-9),
                }
            )
            cpu_before[impl] = cpu_after
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1500, help="synthetic samples generated (~80%% train)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the stored images")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384], help="model input sides")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4, help="timed epochs per loader (best is kept)")
    args = parser.parse_args()

    from biomedgpt.tokenization.unified import BiomedGPTTokenizer

    torch.set_num_threads(1)
    tokenizer = BiomedGPTTokenizer.load_default()
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        shards = make_shards(Path(tmp), samples=args.samples, source_size=args.source_size)
        for size in args.sizes:
            loaders = {
                "ours": ours_loader(shards, tokenizer, image_size=size, batch_size=args.batch_size),
                "peer": peer_loader(shards, tokenizer, image_size=size, batch_size=args.batch_size),
            }
            runs = measure(loaders, repeats=args.repeats)
            del loaders  # stops the persistent workers
            best: dict[str, dict[str, float]] = {}
            for impl, impl_runs in runs.items():
                for run in impl_runs:
                    line = {
                        "bench": "loader",
                        "impl": impl,
                        "image_size": size,
                        "source_size": args.source_size,
                    }
                    print(json.dumps({**line, "workers": 1, **{k: round(v, 1) for k, v in run.items()}}))
                best[impl] = {
                    k: max(r[k] for r in impl_runs) for k in ("samples_per_s_wall", "samples_per_cpu_s")
                }
            summary = {
                "bench": "loader_summary",
                "image_size": size,
                "source_size": args.source_size,
                "ours_samples_per_cpu_s": round(best["ours"]["samples_per_cpu_s"], 1),
                "peer_samples_per_cpu_s": round(best["peer"]["samples_per_cpu_s"], 1),
                "ratio_cpu_ours_over_peer": round(
                    best["ours"]["samples_per_cpu_s"] / best["peer"]["samples_per_cpu_s"], 3
                ),
                "ours_samples_per_s_wall": round(best["ours"]["samples_per_s_wall"], 1),
                "peer_samples_per_s_wall": round(best["peer"]["samples_per_s_wall"], 1),
                "ratio_wall_ours_over_peer": round(
                    best["ours"]["samples_per_s_wall"] / best["peer"]["samples_per_s_wall"], 3
                ),
                "goal_per_core": GOAL_PER_CORE,
                "meets_goal": best["ours"]["samples_per_cpu_s"] >= GOAL_PER_CORE,
            }
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
