"""The image VQ tokenizer: a small convolutional VQ-VAE that turns an image into a grid of `<code_i>` indices.

Follows VQ-VAE (van den Oord et al., 2017, "Neural Discrete Representation Learning", eq. 3) with the
codebook learned by exponential moving averages (ibid. appendix A.1; Razavi et al., 2019, VQ-VAE-2), the
factorized, l2-normalized code lookup of ViT-VQGAN (Yu et al., 2022, section 3.2: a 16-d projection and
cosine-similarity lookup, which keeps a large codebook in use), and dead-code restarts from encoder
outputs (Dhariwal et al., 2020, Jukebox, section 2.2). OFA's image infilling uses a VQGAN with f = 8 at
128 px (a 16 x 16 = 256-code grid); this model keeps that geometry and OFA's 8192 codes
(`VocabLayout.num_codes`), but has neither perceptual nor adversarial loss, so it is a VQ-VAE.

    image uint8 (B, H, W, 3) -> [-1, 1] -> Encoder -> (B, D, H/f, W/f) -> nearest code -> (B, H/f * W/f) int64
    codes -> codebook rows -> Decoder -> (B, 3, H, W) -> uint8

Why f8 and 8192 codes: f8 keeps OFA's 256 codes per 128-px image (f16 would leave 64); a codebook as large
as the fixed `<code_i>` range means every code the model can emit decodes to a trained vector. In a
300-step trial on registry + synthetic images, 1024 codes gave 25.9 dB and 8192 gave 25.4 dB held-out
PSNR (one seed each, so the 0.5 dB gap is not resolved); the committed default, trained 5x longer, uses
91% of its 8192 codes on its training images (tokenizers/image-vq-v1/README.md).

`ImageTokenizer` is the public face (numpy in, numpy out); `VQModel` is the torch module. Weights are
safetensors only; the folder also holds `config.json` (`ImageVQConfig`). Inference runs in float32, so
encoding is deterministic on a given machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biomedgpt.config import check, from_dict, to_dict
from biomedgpt.tokenization.paths import PACKAGE_ASSETS_DIR, repo_root

DEFAULT_IMAGE_TOKENIZER_NAME = "image-vq-v1"
IMAGE_TOKENIZER_DIR_ENV = "BIOMEDGPT_IMAGE_TOKENIZER_DIR"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_BATCH = 64
"""Images per forward pass in `encode`/`decode` (bounds memory, not results)."""


@dataclass(kw_only=True)
class ImageVQConfig:
    """Shape and training constants of the VQ-VAE (saved as config.json next to the weights)."""

    image_size: int = 128
    """Native (training) resolution: a side of `image_size` gives a `image_size / f` square code grid."""
    in_channels: int = 3
    """Image channels (grayscale inputs are repeated to RGB)."""
    stem_channels: int = 32
    """Channels of the full-resolution stem convolution."""
    channels: tuple[int, ...] = (64, 128, 128)
    """Channels after each stride-2 stage; the downsampling factor f is 2 ** len(channels)."""
    res_blocks: int = 1
    """Residual blocks per stage (encoder and decoder)."""
    mid_blocks: int = 1
    """Residual blocks at the code resolution (encoder and decoder)."""
    code_dim: int = 16
    """Dimension of a code vector (ViT-VQGAN's factorized codes)."""
    codebook_size: int = 8192
    """Number of codes K; indices are 0..K-1 and map to `<code_0>`..`<code_{K-1}>`."""
    ema_decay: float = 0.99
    """Decay of the codebook's exponential moving averages."""
    commitment_weight: float = 0.25
    """beta of the commitment loss ||z_e - sg(z_q)||^2."""
    restart_after_steps: int = 100
    """A code not chosen for this many training steps is restarted at a random encoder output."""

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        check(len(self.channels) >= 1, "channels", "needs at least one stage")
        for name in ("image_size", "in_channels", "stem_channels", "code_dim", "codebook_size"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(all(c >= 8 and c % 8 == 0 for c in (self.stem_channels, *self.channels)), "channels",
              f"every width must be a multiple of 8 (GroupNorm groups), got {self.channels}")  # fmt: skip
        check(self.image_size % self.downsample == 0, "image_size",
              f"{self.image_size} is not a multiple of the downsampling factor {self.downsample}")  # fmt: skip
        check(self.res_blocks >= 0 and self.mid_blocks >= 0, "res_blocks", "block counts must be >= 0")
        check(0.0 < self.ema_decay < 1.0, "ema_decay", f"must be in (0, 1), got {self.ema_decay}")
        check(self.commitment_weight >= 0, "commitment_weight", "must be >= 0")
        check(self.restart_after_steps >= 1, "restart_after_steps", "must be >= 1")

    @property
    def downsample(self) -> int:
        """f: image side / code-grid side."""
        return 2 ** len(self.channels)


# --- the network ---------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))) at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    def __init__(self, cfg: ImageVQConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(cfg.in_channels, cfg.stem_channels, 3, padding=1)
        layers: list[nn.Module] = []
        width = cfg.stem_channels
        for out in cfg.channels:
            layers.append(nn.Conv2d(width, out, 3, stride=2, padding=1))  # halves H and W
            layers += [ResBlock(out) for _ in range(cfg.res_blocks)]
            width = out
        layers += [ResBlock(width) for _ in range(cfg.mid_blocks)]
        self.body = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(8, width)
        self.proj = nn.Conv2d(width, cfg.code_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.stem(x))  # (B, C, H/f, W/f)
        return self.proj(F.silu(self.norm(h)))  # (B, D, H/f, W/f)


class Decoder(nn.Module):
    def __init__(self, cfg: ImageVQConfig) -> None:
        super().__init__()
        widths = list(reversed(cfg.channels))
        self.proj = nn.Conv2d(cfg.code_dim, widths[0], 3, padding=1)
        layers: list[nn.Module] = [ResBlock(widths[0]) for _ in range(cfg.mid_blocks)]
        for i, width in enumerate(widths):
            out = widths[i + 1] if i + 1 < len(widths) else cfg.stem_channels
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, out, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(8, cfg.stem_channels)
        self.out = nn.Conv2d(cfg.stem_channels, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.body(self.proj(z))  # (B, stem, H, W)
        return self.out(F.silu(self.norm(h)))  # (B, 3, H, W), about [-1, 1]


class EMAQuantizer(nn.Module):
    """Nearest-code lookup by cosine similarity; codebook = normalized EMA mean of its assigned vectors."""

    def __init__(self, cfg: ImageVQConfig) -> None:
        super().__init__()
        self.decay, self.restart_after = cfg.ema_decay, cfg.restart_after_steps
        codebook = F.normalize(torch.randn(cfg.codebook_size, cfg.code_dim), dim=1)
        self.register_buffer("codebook", codebook)  # (K, D), unit rows: the only saved state
        # Training state, not saved (it would add 0.6 MB to the asset); reset from the codebook on load.
        self.register_buffer("ema_count", torch.ones(cfg.codebook_size), persistent=False)  # (K,)
        self.register_buffer("ema_sum", codebook.clone(), persistent=False)  # (K, D)
        self.register_buffer("last_used", torch.zeros(cfg.codebook_size, dtype=torch.long), persistent=False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.reset_ema())

    @torch.no_grad()
    def reset_ema(self) -> None:
        """Restart the moving averages at the current codebook (after loading, before fine-tuning)."""
        self.ema_sum.copy_(self.codebook)
        self.ema_count.fill_(1.0)
        self.last_used.fill_(int(self.step))

    def lookup(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D) unit vectors -> (N,) nearest code indices (ties go to the lowest index)."""
        return torch.argmax(z @ self.codebook.T, dim=1)  # (N, K) -> (N,)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, D, h, w) -> (z_q with straight-through gradient (B, D, h, w), indices (B, h, w), commit loss)."""
        b, d, h, w = z_e.shape
        z = F.normalize(z_e.float().permute(0, 2, 3, 1).reshape(-1, d), dim=1)  # (N, D), N = B*h*w
        indices = self.lookup(z.detach())  # (N,)
        if self.training:
            self._ema_update(z.detach(), indices)
        z_q = self.codebook[indices]  # (N, D)
        commit = F.mse_loss(z, z_q.detach())
        z_q = z + (z_q - z).detach()  # straight-through estimator
        z_q = z_q.reshape(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, h, w)
        return z_q, indices.reshape(b, h, w), commit

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        self.step += 1
        counts = torch.bincount(indices, minlength=self.codebook.shape[0]).float()  # (K,)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, z)  # (K, D)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.last_used[counts > 0] = self.step
        self.codebook.copy_(F.normalize(self.ema_sum / self.ema_count.clamp_min(1e-6)[:, None], dim=1))
        dead = torch.nonzero(self.step - self.last_used > self.restart_after).squeeze(1)
        if len(dead):
            # restart dead codes at random current encoder outputs (Jukebox): they land where data is
            pick = torch.randint(len(z), (len(dead),), device=z.device)
            fresh = F.normalize(z[pick] + 0.01 * torch.randn_like(z[pick]), dim=1)
            self.codebook[dead] = fresh
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = 1.0
            self.last_used[dead] = self.step

    @torch.no_grad()
    def init_from(self, z_e: torch.Tensor) -> None:
        """Seed every code with an encoder output of a first batch (with replacement, plus jitter)."""
        d = z_e.shape[1]
        z = F.normalize(z_e.float().permute(0, 2, 3, 1).reshape(-1, d), dim=1)
        pick = torch.randint(len(z), (self.codebook.shape[0],), device=z.device)
        fresh = F.normalize(z[pick] + 0.05 * torch.randn_like(z[pick]), dim=1)
        self.codebook.copy_(fresh)
        self.ema_sum.copy_(fresh)
        self.ema_count.fill_(1.0)


class VQModel(nn.Module):
    """Encoder + EMA quantizer + decoder; `forward` returns (reconstruction, indices, commitment loss)."""

    def __init__(self, cfg: ImageVQConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = EMAQuantizer(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_e = self.encoder(x)  # (B, D, H/f, W/f)
        z_q, indices, commit = self.quantizer(z_e)
        return self.decoder(z_q), indices, commit  # (B, 3, H, W), (B, H/f, W/f), ()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, H/f, W/f) code indices."""
        z_e = self.encoder(x)
        b, d, h, w = z_e.shape
        z = F.normalize(z_e.permute(0, 2, 3, 1).reshape(-1, d), dim=1)  # (B*h*w, D)
        return self.quantizer.lookup(z).reshape(b, h, w)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code indices -> (B, 3, h*f, w*f) in about [-1, 1]."""
        z_q = self.quantizer.codebook[indices].permute(0, 3, 1, 2)  # (B, D, h, w)
        return self.decoder(z_q)


# --- numpy <-> tensors ---------------------------------------------------------------------------------
def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W) or (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {array.dtype}")
    if array.ndim == 3:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W) or (B, H, W, 3), got shape {array.shape}")
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    return x / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), rounded and clipped."""
    pixels = ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Any (H, W) or (H, W, 3) uint8 image -> (size, size, 3) uint8, bicubic (as the model's processor)."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    pil = Image.fromarray(np.ascontiguousarray(array.astype(np.uint8)))
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(pil.convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays (peak 255); inf when identical.

    A grayscale array (..., H, W) is compared with an RGB one (..., H, W, 3) channel by channel.
    """
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.ndim + 1 == y.ndim and y.shape[-1] == 3:
        x = x[..., None]
    elif y.ndim + 1 == x.ndim and x.shape[-1] == 3:
        y = y[..., None]
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


# --- the public tokenizer ------------------------------------------------------------------------------
def default_image_tokenizer_dir(name: str = DEFAULT_IMAGE_TOKENIZER_NAME) -> Path:
    """`$BIOMEDGPT_IMAGE_TOKENIZER_DIR`, else `<repo>/tokenizers/<name>`, else the packaged asset copy."""
    candidates = []
    if os.environ.get(IMAGE_TOKENIZER_DIR_ENV):
        candidates.append(Path(os.environ[IMAGE_TOKENIZER_DIR_ENV]))
    root = repo_root()
    if root is not None:
        candidates.append(root / "tokenizers" / name)
    candidates.append(PACKAGE_ASSETS_DIR / name)
    for folder in candidates:
        if (folder / WEIGHTS_NAME).is_file():
            return folder
    raise FileNotFoundError(
        f"image tokenizer {name!r} not found (tried: {', '.join(map(str, candidates))}); retrain it with"
        f" `biomedgpt tokenizer train-image` or point ${IMAGE_TOKENIZER_DIR_ENV} at a folder with {WEIGHTS_NAME}"
    )


class ImageTokenizer:
    """Images <-> `<code_i>` index grids (row-major), with the committed default in `tokenizers/image-vq-v1`."""

    def __init__(self, model: VQModel) -> None:
        self.model = model.eval()
        self.config = model.config

    @property
    def image_size(self) -> int:
        """Native training resolution (square side in pixels)."""
        return self.config.image_size

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def downsample(self) -> int:
        return self.config.downsample

    def grid_size(self, image_size: int | None = None) -> int:
        """Side of the code grid for a square image of side `image_size` (default: the native size)."""
        size = self.image_size if image_size is None else image_size
        if size < 1 or size % self.downsample:
            raise ValueError(f"image size {size} is not a positive multiple of f = {self.downsample}")
        return size // self.downsample

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W) or (B, H, W, 3), H and W multiples of f -> int64 (B, H/f * W/f) codes, row-major."""
        x = images_to_tensor(images)
        height, width = x.shape[-2:]
        if height % self.downsample or width % self.downsample:
            raise ValueError(
                f"image {height}x{width} is not a multiple of f = {self.downsample}; resize first"
                f" (e.g. resize_square(image, {self.image_size}))"
            )
        with torch.inference_mode():
            codes = [self.model.encode(chunk) for chunk in x.split(_BATCH)]
        return torch.cat(codes).reshape(len(x), -1).to(torch.int64).numpy()

    def decode(self, codes: np.ndarray, *, grid: tuple[int, int] | None = None) -> np.ndarray:
        """int (B, h*w) codes in 0..K-1 -> uint8 (B, h*f, w*f, 3); `grid` = (h, w), default square."""
        array = np.asarray(codes)
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.dtype.kind not in "iu":
            raise ValueError(f"codes must be an integer (B, h*w) array, got {array.dtype} {array.shape}")
        if array.size and (array.min() < 0 or array.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in 0..{self.codebook_size - 1}")
        h, w = grid if grid is not None else (_square_side(array.shape[1]),) * 2
        if h * w != array.shape[1]:
            raise ValueError(f"grid {h}x{w} does not hold {array.shape[1]} codes")
        indices = torch.from_numpy(array.astype(np.int64)).reshape(-1, h, w)
        with torch.inference_mode():
            images = [self.model.decode(chunk) for chunk in indices.split(_BATCH)]
        if not images:
            return np.zeros((0, h * self.downsample, w * self.downsample, 3), dtype=np.uint8)
        return tensor_to_images(torch.cat(images))

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """decode(encode(images))."""
        height, width = np.asarray(images).shape[1:3]
        grid = (height // self.downsample, width // self.downsample)
        return self.decode(self.encode(images), grid=grid)

    # --- persistence ----------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write `model.safetensors` (weights and codebook) and `config.json`."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        # one metadata key: safetensors keeps metadata in a hash map, so several keys come out in any order
        save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
        doc = {"model_type": "biomedgpt-image-vq", **to_dict(self.config)}
        (out / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> ImageTokenizer:
        """Load a folder written by `save_pretrained` (safetensors only; nothing is unpickled)."""
        from safetensors.torch import load_file

        path = Path(folder)
        doc = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
        doc.pop("model_type", None)
        model = VQModel(from_dict(ImageVQConfig, doc))
        model.load_state_dict(load_file(str(path / WEIGHTS_NAME)), strict=True)
        return cls(model)

    @classmethod
    def load_default(cls, name: str = DEFAULT_IMAGE_TOKENIZER_NAME) -> ImageTokenizer:
        """The committed tokenizer (`tokenizers/image-vq-v1`), found by `default_image_tokenizer_dir`."""
        return cls.from_pretrained(default_image_tokenizer_dir(name))

    @classmethod
    def from_config(
        cls, config: ImageVQConfig | dict[str, Any] | None = None, *, seed: int = 0
    ) -> ImageTokenizer:
        """A randomly initialized tokenizer (seeded), for training and tests."""
        cfg = config if isinstance(config, ImageVQConfig) else from_dict(ImageVQConfig, config or {})
        torch.manual_seed(seed)
        return cls(VQModel(cfg))


def _square_side(n: int) -> int:
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"{n} codes do not form a square grid; pass grid=(h, w)")
    return side
