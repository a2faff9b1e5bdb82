"""`BiomedGPTProcessor`: images + prompts -> model inputs, and generated tokens -> text.

A prompt is encoded as `<s> prompt </s>` (OFA's source format); prompts are right-padded. A sample without an
image gets a blank image and `patch_masks = False`, so its patch tokens are masked out (as OFA does for
text-only tasks). `save_pretrained` writes the tokenizer and `preprocessor_config.json` side by side, so a
model folder loads with `load_pretrained(path)` and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from biomedgpt.model.image_processing import BiomedGPTImageProcessor, ImageProcessorConfig


class BiomedGPTProcessor:
    def __init__(self, tokenizer: Any, image_processor: BiomedGPTImageProcessor) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    @classmethod
    def default(cls, *, image_size: int = 256) -> BiomedGPTProcessor:
        """The committed biomedical BPE tokenizer and an image processor for `image_size`."""
        from biomedgpt.tokenization.unified import BiomedGPTTokenizer

        return cls(
            BiomedGPTTokenizer.load_default(),
            BiomedGPTImageProcessor(ImageProcessorConfig(image_size=image_size)),
        )

    def encode_prompts(
        self, prompts: Sequence[str], *, max_length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompts -> right-padded ids (B, T) and attention mask (B, T); too-long prompts are an error."""
        encoded = [self.tokenizer.encode_prompt(p) for p in prompts]
        if max_length is not None:
            for i, ids in enumerate(encoded):
                if len(ids) > max_length:
                    raise ValueError(f"prompt {i} has {len(ids)} tokens, more than the limit of {max_length}")
        width = max(len(ids) for ids in encoded)
        input_ids = np.full((len(encoded), width), self.tokenizer.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(encoded), width), dtype=np.int64)
        for i, ids in enumerate(encoded):
            input_ids[i, : len(ids)] = ids
            attention_mask[i, : len(ids)] = 1
        return input_ids, attention_mask

    def __call__(
        self,
        *,
        text: str | Sequence[str],
        images: Image.Image | np.ndarray | Sequence[Image.Image | np.ndarray | None] | None = None,
        return_tensors: str | None = "pt",
        max_length: int | None = None,
    ) -> dict[str, Any]:
        prompts = [text] if isinstance(text, str) else list(text)
        if images is None:
            image_list: list = [None] * len(prompts)
        elif isinstance(images, (Image.Image, np.ndarray)):
            image_list = [images]
        else:
            image_list = list(images)
        if len(image_list) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(image_list)} images")
        input_ids, attention_mask = self.encode_prompts(prompts, max_length=max_length)
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if any(image is not None for image in image_list):
            pixels, present = self.image_processor(image_list)
            batch.update(patch_images=pixels, patch_masks=present)
        if return_tensors == "pt":
            import torch

            batch = {k: torch.from_numpy(v) for k, v in batch.items()}
        elif return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        return batch

    def batch_decode(self, sequences: Any) -> list[str]:
        """Generated token rows -> text (specials, image codes and location bins dropped)."""
        rows = sequences.tolist() if hasattr(sequences, "tolist") else list(sequences)
        return [self.tokenizer.decode_text(row) for row in rows]

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BiomedGPTProcessor:
        from biomedgpt.tokenization.unified import BiomedGPTTokenizer

        return cls(
            BiomedGPTTokenizer.from_pretrained(str(directory)),
            BiomedGPTImageProcessor.from_pretrained(directory),
        )


def load_pretrained(directory: str | Path, *, device: str = "cpu"):
    """A saved model folder -> (model in eval mode, processor). Weights are read from safetensors only."""
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    path = Path(directory)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a BiomedGPT model folder (no config.json)")
    if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        raise FileNotFoundError(f"{path} has no model.safetensors: only safetensors weights are loaded")
    model = BiomedGPTForConditionalGeneration.from_pretrained(path, use_safetensors=True).to(device).eval()
    return model, BiomedGPTProcessor.from_pretrained(path)
