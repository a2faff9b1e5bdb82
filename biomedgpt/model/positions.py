"""Position indices of OFA's unify transformer: relative-position buckets and image-grid position ids.

OFA (`models/ofa/unify_transformer.py`: make_token_bucket_position, make_image_bucket_position, and the decoder's
image_position_idx buffer). Pure index arithmetic on small integer tables, cached per size.

The caches hold numpy arrays and every call wraps them with `torch.from_numpy` (no copy): a cached torch tensor
made while `torch.export` traces would be a fake tensor, and every later eager call would get it back.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def token_bucket_positions(bucket_size: int, max_position: int) -> torch.Tensor:
    """(max_position, max_position) bucket ids for 1-D relative distances: exact within +-bucket/2, log beyond."""
    return torch.from_numpy(_token_bucket_positions(bucket_size, max_position))


def image_bucket_positions(bucket_size: int) -> torch.Tensor:
    """(bucket^2 + 1, bucket^2 + 1) bucket ids for 2-D relative offsets; index 0 is a special 'cls' position."""
    return torch.from_numpy(_image_bucket_positions(bucket_size))


@lru_cache(maxsize=8)
def _token_bucket_positions(bucket_size: int, max_position: int) -> np.ndarray:
    context = torch.arange(max_position)[:, None]
    memory = torch.arange(max_position)[None, :]
    relative = context - memory
    sign = torch.sign(relative)
    mid = bucket_size // 2
    abs_pos = torch.where((relative < mid) & (relative > -mid), mid - 1, relative.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    bucket = torch.where(abs_pos <= mid, relative, log_pos.int() * sign).long()
    return (bucket + bucket_size - 1).numpy()  # ids in [0, 2 * bucket_size - 2]


@lru_cache(maxsize=8)
def _image_bucket_positions(bucket_size: int) -> np.ndarray:
    num_relative = (2 * bucket_size - 1) ** 2 + 3
    coords = torch.stack(torch.meshgrid(torch.arange(bucket_size), torch.arange(bucket_size), indexing="ij"))
    coords = coords.flatten(1)  # (2, bucket^2)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (bucket^2, bucket^2, 2)
    relative = relative + (bucket_size - 1)
    index = relative[..., 0] * (2 * bucket_size - 1) + relative[..., 1]
    table = torch.zeros((bucket_size * bucket_size + 1,) * 2, dtype=torch.long)
    table[1:, 1:] = index
    table[0, :] = num_relative - 3
    table[:, 0] = num_relative - 2
    table[0, 0] = num_relative - 1
    return table.numpy()


def image_grid_positions(height: int, width: int, bucket_size: int) -> torch.Tensor:
    """Ids into the image position table for an (height, width) patch grid, row-major, offset by 1 (0 = cls)."""
    rows = torch.arange(height)[:, None] * bucket_size
    cols = torch.arange(width)[None, :]
    return (rows + cols + 1).flatten()  # (height * width,)


def decoder_code_positions(grid: int, bucket_size: int, length: int) -> torch.Tensor:
    """Image position ids of decoder steps when the target is a grid of image codes.

    Step 0 (bos) takes the cls position 0, steps 1..grid^2 the patch grid; later steps (eos, padding) reuse one
    fixed position. OFA pads this buffer to 769 entries in fairseq and 768 in its HF port; we size it from the
    requested length so both conventions load.
    """
    grid_ids = image_grid_positions(grid, grid, bucket_size)
    tail = torch.full((max(0, length - 1 - grid_ids.numel()),), 1024 % (bucket_size * bucket_size + 1))
    return torch.cat([torch.zeros(1, dtype=torch.long), grid_ids, tail])[:length]


OFA_BUCKET_TABLE_SIZE = 1024
"""OFA builds its 1-D bucket table for 1024 positions (`make_token_bucket_position`'s default), whatever the
model's max positions are, and slices it; the log buckets depend on that size, so we use the same."""


def bucket_table_size(max_positions: int) -> int:
    """Side of the 1-D bucket table: OFA's 1024, or more for a model configured with longer sequences."""
    return max(OFA_BUCKET_TABLE_SIZE, max_positions)
