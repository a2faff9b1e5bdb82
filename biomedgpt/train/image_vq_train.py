"""Train the image VQ tokenizer (`biomedgpt.tokenization.image_vq`) on the images of webdataset shards.

    biomedgpt tokenizer train-image --shards data_shards/demo --out tokenizers/image-vq-v1

Images come from every sample with an image (`biomedgpt.data.shards.iter_tar_samples` +
`schema.decode_sample`), deduplicated by pixels, resized to a square `image_size` (bicubic, as the
model's image processor does) and kept in memory. The train split trains; the test split is held out
for PSNR and codebook usage (images that also occur in the train split are dropped from it). Training
sees random `crop`-pixel crops (the network is fully convolutional, so small crops cost a quarter of
the compute and the model still encodes whole images) with horizontal flips; loss = MSE + beta *
commitment; Adam with warmup and cosine decay; bfloat16 autocast on CPU (AMX) or GPU; seeded.

The output folder gets `model.safetensors`, `config.json`, `metrics.json` (PSNR on the held-out images,
codebook usage, tokens per image, data counts, timing, the command), `recon.png` (originals over
reconstructions) and a README generated from the metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainImageVQConfig:
    """One training run of the image VQ tokenizer."""

    shards: Path
    """Folder of webdataset shards (`*-train-*.tar`, `*-test-*.tar`) written by `biomedgpt shard`."""
    out: Path
    """Output folder (model.safetensors, config.json, metrics.json, recon.png, README.md)."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 16
    """Crops per step."""
    crop: int = 64
    """Side of the random training crops (a multiple of f)."""
    lr: float = 1e-3
    """Peak Adam learning rate (linear warmup over `warmup` steps, cosine decay to lr / 10)."""
    warmup: int = 200
    """Warmup steps."""
    image_size: int = 128
    """Native resolution: images are resized to this square."""
    codebook_size: int = 8192
    """Number of codes."""
    seed: int = 0
    """Seeds torch and the crop sampler."""
    threads: int = 2
    """torch CPU threads."""
    bf16: bool = True
    """bfloat16 autocast for training (inference and evaluation always run in float32)."""
    max_eval_images: int = 256
    """Held-out images evaluated at the end (all of them when fewer)."""
    command: str = ""
    """The command line, recorded in metrics.json and the README."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra `ImageVQConfig` fields (e.g. {"code_dim": 32})."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.warmup < 0:
            raise ValueError("steps and batch_size must be >= 1, warmup >= 0")
        if self.crop < 8 or self.crop > self.image_size:
            raise ValueError(f"crop must be in 8..image_size ({self.image_size}), got {self.crop}")


# --- data -----------------------------------------------------------------------------------------------
def load_shard_images(
    shards: Path, *, image_size: int, splits: tuple[str, ...] = ("train", "test")
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """{split: uint8 (N, S, S, 3)} of the distinct images in `shards`, plus counts by split and source."""
    from biomedgpt.data.schema import decode_sample
    from biomedgpt.data.shards import iter_tar_samples
    from biomedgpt.tokenization.image_vq import resize_square

    tars = sorted(Path(shards).glob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"{shards}: no .tar shards here (write some with `biomedgpt shard`)")
    images: dict[str, dict[str, np.ndarray]] = {s: {} for s in splits}
    sources: dict[str, dict[str, int]] = {s: {} for s in splits}
    for tar in tars:
        for members in iter_tar_samples(tar):
            sample = decode_sample(members)
            if sample.image is None or sample.split not in images:
                continue
            pixels = resize_square(_to_uint8(sample.image), image_size)
            digest = hashlib.sha256(pixels.tobytes()).hexdigest()
            if digest not in images[sample.split]:
                images[sample.split][digest] = pixels
                source = sample.source or "unknown"
                sources[sample.split][source] = sources[sample.split].get(source, 0) + 1
    if "train" in images and "test" in images:  # a held-out image must not also be a training image
        for digest in set(images["test"]) & set(images["train"]):
            del images["test"][digest]
    stacked = {
        s: np.stack(list(d.values())) if d else np.zeros((0, image_size, image_size, 3), np.uint8)
        for s, d in images.items()
    }
    counts = {
        "images": {s: len(a) for s, a in stacked.items()},
        "sources": sources,
        "shards": str(shards),
        "manifest": _manifest_summary(Path(shards)),
    }
    return stacked, counts


def _manifest_summary(shards: Path) -> dict[str, Any] | None:
    """Name, command and per-shard sha256 from the folder's manifest.json (provenance of the run)."""
    path = shards / "manifest.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {
        "name": doc.get("name"),
        "command_line": doc.get("command_line"),
        "created_at": doc.get("created_at"),
        "shards": {s["file"]: s["sha256"] for s in doc.get("shards", [])},
    }


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    from biomedgpt.ingest.volumes import window

    return window(image, modality=None)  # int16 CT or float: percentile-scaled, as a display would


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights, for the grayscale augmentation."""
GRAY_PROBABILITY = 0.25
"""Share of crops turned gray: most medical images are grayscale, and gray in must decode gray out."""


def _batches(images: np.ndarray, *, crop: int, batch_size: int, rng: np.random.Generator):
    """Endless random (crop x crop) crops, randomly flipped and grayed: uint8 (B, crop, crop, 3)."""
    n, size = len(images), images.shape[1]
    while True:
        idx = rng.integers(n, size=batch_size)
        ys, xs = rng.integers(0, size - crop + 1, size=(2, batch_size))
        flips = rng.random(batch_size) < 0.5
        grays = rng.random(batch_size) < GRAY_PROBABILITY
        out = np.empty((batch_size, crop, crop, 3), dtype=np.uint8)
        for j in range(batch_size):
            tile = images[idx[j], ys[j] : ys[j] + crop, xs[j] : xs[j] + crop]
            tile = tile[:, ::-1] if flips[j] else tile
            if grays[j]:
                tile = np.repeat(np.rint(tile @ _LUMA).astype(np.uint8)[..., None], 3, axis=-1)
            out[j] = tile
        yield out


# --- training ---------------------------------------------------------------------------------------------
def _lr_at(step: int, cfg: TrainImageVQConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def train_steps(
    tokenizer: Any, images: np.ndarray, cfg: TrainImageVQConfig, *, progress: bool = True
) -> list[float]:
    """Run `cfg.steps` optimizer steps on crops of `images` (N, S, S, 3); returns the loss per step."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from biomedgpt.tokenization.image_vq import images_to_tensor

    model = tokenizer.model
    model.train()
    rng = np.random.default_rng(cfg.seed)
    batches = _batches(images, crop=cfg.crop, batch_size=cfg.batch_size, rng=rng)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    with torch.no_grad():  # seed the codebook with encoder outputs of a first batch
        model.quantizer.init_from(model.encoder(images_to_tensor(next(batches))))
    beta = model.config.commitment_weight
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), disable=not progress, desc="train-image", unit="step", mininterval=2.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        x = images_to_tensor(next(batches))  # (B, 3, crop, crop)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            recon, _indices, commit = model(x)
        mse = F.mse_loss(recon.float(), x)
        loss = mse + beta * commit
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            batch_psnr = 10 * math.log10(4.0 / max(float(mse.detach()), 1e-12))  # peak-to-peak 2 in [-1, 1]
            bar.set_postfix(loss=f"{losses[-1]:.4f}", psnr=f"{batch_psnr:.1f}")
    model.eval()
    return losses


def evaluate(tokenizer: Any, images: np.ndarray) -> dict[str, Any]:
    """PSNR of decode(encode(x)) on `images` and codebook usage of their codes (float32 inference)."""
    from biomedgpt.tokenization.image_vq import psnr

    codes = tokenizer.encode(images)  # (N, h*w)
    recon = tokenizer.decode(codes)
    scores = np.array([psnr(a, b) for a, b in zip(images, recon)])
    counts = np.bincount(codes.reshape(-1), minlength=tokenizer.codebook_size)
    p = counts[counts > 0] / counts.sum()
    return {
        "num_images": len(images),
        "psnr_mean": round(float(scores.mean()), 3),
        "psnr_median": round(float(np.median(scores)), 3),
        "psnr_min": round(float(scores.min()), 3),
        "psnr_p10": round(float(np.percentile(scores, 10)), 3),
        "codes_used": int((counts > 0).sum()),
        "codebook_usage": round(float((counts > 0).mean()), 4),
        "code_perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 1),
        "tokens_per_image": int(codes.shape[1]),
        "per_image_psnr": [round(float(s), 2) for s in scores],
    }


def synthetic_eval_images(n: int = 64, *, seed: int = 6, image_size: int = 128) -> np.ndarray:
    """SYNTHETIC scans with lesions (`data.synthetic.make_scan`), a second, out-of-corpus held-out set."""
    from biomedgpt.ingest.synthetic import make_scan

    rng = np.random.default_rng([seed, 99])
    return np.stack([make_scan(rng, image_size=image_size, min_lesions=1).image for _ in range(n)])


def save_recon_figure(path: Path, originals: np.ndarray, recon: np.ndarray, *, title: str) -> None:
    """Originals (top row) over reconstructions (bottom row), PSNR under each reconstruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biomedgpt.tokenization.image_vq import psnr

    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        for row, (image, label) in enumerate(((originals[i], "original"), (recon[i], "reconstruction"))):
            ax = axes[row][i]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
        axes[1][i].set_xlabel(f"{psnr(originals[i], recon[i]):.1f} dB", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_picks(n: int, count: int = 8) -> np.ndarray:
    return np.linspace(0, n - 1, num=min(n, count)).round().astype(int)


def train_image_vq(cfg: TrainImageVQConfig, *, progress: bool = True) -> dict[str, Any]:
    """The whole run: load shards, train, evaluate on the held-out split, write the asset folder."""
    import torch

    from biomedgpt.tokenization.image_vq import ImageTokenizer, ImageVQConfig

    torch.set_num_threads(cfg.threads)
    data, counts = load_shard_images(cfg.shards, image_size=cfg.image_size)
    train, held_out = data["train"], data["test"]
    if len(train) == 0 or len(held_out) == 0:
        raise ValueError(f"{cfg.shards}: need train and test images, found {counts['images']}")
    logger.info("images: %s", counts["images"])
    model_cfg = ImageVQConfig(
        image_size=cfg.image_size, codebook_size=cfg.codebook_size, **cfg.model_overrides
    )
    tokenizer = ImageTokenizer.from_config(model_cfg, seed=cfg.seed)
    start = time.perf_counter()
    losses = train_steps(tokenizer, train, cfg, progress=progress)
    train_seconds = time.perf_counter() - start
    picks = np.random.default_rng(cfg.seed).permutation(len(held_out))[: cfg.max_eval_images]
    eval_images = held_out[np.sort(picks)]
    metrics = evaluate(tokenizer, eval_images)
    train_picks = np.random.default_rng(cfg.seed + 1).permutation(len(train))[: len(eval_images)]
    train_metrics = evaluate(tokenizer, train[np.sort(train_picks)])  # same count, for an overfit check
    synthetic_metrics = evaluate(tokenizer, synthetic_eval_images(image_size=cfg.image_size))
    train_codes_used = len(np.unique(tokenizer.encode(train)))  # usage over every training image
    cfg.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(cfg.out)
    shown = eval_images[_figure_picks(len(eval_images))]
    save_recon_figure(
        cfg.out / "recon.png",
        shown,
        tokenizer.reconstruct(shown),
        title=f"held-out images (top) and reconstructions (bottom): {metrics['tokens_per_image']} codes each",
    )
    n_params = sum(p.numel() for p in tokenizer.model.parameters())
    result = {
        "held_out": {k: v for k, v in metrics.items() if k != "per_image_psnr"},
        "held_out_per_image_psnr": metrics["per_image_psnr"],
        "train_subset": {k: v for k, v in train_metrics.items() if k != "per_image_psnr"},
        "synthetic": {k: v for k, v in synthetic_metrics.items() if k != "per_image_psnr"},
        "train_codes_used": train_codes_used,
        "data": counts,
        "training": {
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "crop": cfg.crop,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "threads": cfg.threads,
            "bf16": cfg.bf16,
            "seconds": round(train_seconds, 1),
            "first_loss": round(float(np.mean(losses[:20])), 5),
            "last_loss": round(float(np.mean(losses[-20:])), 5),
            "torch": torch.__version__,
        },
        "model": {"parameters": n_params, "weights_bytes": (cfg.out / "model.safetensors").stat().st_size},
        "command": cfg.command,
    }
    (cfg.out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (cfg.out / "README.md").write_text(render_readme(result, tokenizer.config), encoding="utf-8")
    return result


def render_readme(result: dict[str, Any], config: Any) -> str:
    """The asset card of a trained tokenizer folder, from its metrics (see tokenizers/image-vq-v1)."""
    held, data, train = result["held_out"], result["data"], result["training"]
    grid = config.image_size // config.downsample
    manifest = data.get("manifest") or {}
    built = " ".join(manifest.get("command_line") or []) or "(no manifest.json next to the shards)"
    sources = ", ".join(f"{k} {v}" for k, v in sorted(data["sources"]["train"].items()))
    test_sources = ", ".join(f"{k} {v}" for k, v in sorted(data["sources"]["test"].items()))
    return f"""# image-vq-v1: the image VQ tokenizer (`<code_i>` targets)

Generated by `biomedgpt tokenizer train-image`; numbers below come from `metrics.json` of the same run.
Load it with `biomedgpt.tokenization.image_vq.ImageTokenizer.load_default()`.

## Architecture

A convolutional VQ-VAE (`biomedgpt/tokenization/image_vq.py`), {result["model"]["parameters"]:,} parameters,
weights in `model.safetensors` ({result["model"]["weights_bytes"] / 1e6:.1f} MB, float32):

- encoder: 3x3 stem ({config.stem_channels} ch) -> {len(config.channels)} stride-2 stages {list(config.channels)}
  ({config.res_blocks} residual block(s) each) -> {config.mid_blocks} residual block(s) -> 1x1 projection to {config.code_dim}-d;
- quantizer: {config.codebook_size:,} codes of {config.code_dim} dims, l2-normalized (cosine lookup, ViT-VQGAN),
  learned by EMA (decay {config.ema_decay}), commitment weight {config.commitment_weight}, codes unused for
  {config.restart_after_steps} steps restarted at random encoder outputs;
- decoder: the mirror image with nearest-neighbour upsampling.

f = {config.downsample}: a {config.image_size} x {config.image_size} image becomes a {grid} x {grid} grid,
**{grid * grid} tokens per image** (row-major), as OFA's image infilling (code_image_size 128, f8 VQGAN).
Indices are 0..{config.codebook_size - 1} and map to `<code_0>`..`<code_{config.codebook_size - 1}>`.
Loss: MSE + commitment only (no perceptual or adversarial term), so reconstructions are smooth.

Why these choices: f = 8 keeps OFA's 256-code grid for a 128-px image (f = 16 would leave 64 codes, a
quarter of the detail budget); a codebook as large as the vocabulary's fixed `<code_i>` range means every
code id the model can emit decodes to a trained vector; cosine lookup in 16 dims, EMA updates and
restarts keep the codes in use (usage below); a few million parameters train on two CPU cores in minutes.

## Data

Shards `{data["shards"]}`: {data["images"]["train"]:,} distinct training images ({sources}) and
{data["images"]["test"]:,} held-out test-split images ({test_sources}), each resized to
{config.image_size} x {config.image_size} (bicubic, grayscale repeated to RGB). The shards were written by
`{built}` (per-shard sha256 in `metrics.json`).

## Results on held-out images ({held["num_images"]} test-split images, float32 inference)

| metric | value |
|---|---|
| PSNR mean / median | {held["psnr_mean"]:.2f} / {held["psnr_median"]:.2f} dB |
| PSNR 10th percentile / min | {held["psnr_p10"]:.2f} / {held["psnr_min"]:.2f} dB |
| codes used on these images | {held["codes_used"]:,} of {config.codebook_size:,} ({100 * held["codebook_usage"]:.1f}%) |
| codes used on all {data["images"]["train"]:,} training images | {result["train_codes_used"]:,} ({100 * result["train_codes_used"] / config.codebook_size:.1f}%) |
| code perplexity | {held["code_perplexity"]:,} |
| tokens per image | {held["tokens_per_image"]} |
| PSNR mean on as many training images | {result["train_subset"]["psnr_mean"]:.2f} dB |
| PSNR mean on {result["synthetic"]["num_images"]} SYNTHETIC scans (`synthetic_eval_images`, never trained on) | {result["synthetic"]["psnr_mean"]:.2f} dB |

`recon.png`: held-out originals (top) over their reconstructions (bottom).

## Training

{train["steps"]:,} Adam steps of {train["batch_size"]} random {train["crop"]}x{train["crop"]} crops (random flips, a quarter
turned gray), lr {train["lr"]} (warmup, cosine), seed {train["seed"]}, bf16 autocast={train["bf16"]}, {train["threads"]} CPU thread(s),
torch {train["torch"]}: {train["seconds"] / 60:.1f} min. Loss {train["first_loss"]} -> {train["last_loss"]}.

Retrain (deterministic for a given machine and thread count):

```bash
{built}
{result["command"]}
```
"""
