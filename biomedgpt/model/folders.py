"""Where the model folder is, given a model folder, a training run folder or its checkpoints/ folder.

Torch-free (paths only): the serving engines, the evaluation runner and the export all accept any of the three.
The trainer writes `checkpoints/latest`, which names the newest complete checkpoint folder (`train/checkpoint.py`).
"""

from __future__ import annotations

from pathlib import Path


def resolve_checkpoint(path: str | Path) -> Path:
    """A model folder as is; a run folder or its checkpoints/ folder -> the checkpoint its `latest` file names."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    for root in (path, path / "checkpoints"):
        pointer = root / "latest"
        if pointer.is_file() and (root / pointer.read_text().strip() / "config.json").is_file():
            return root / pointer.read_text().strip()
    raise FileNotFoundError(
        f"{path} is neither a model folder (config.json) nor a run with checkpoints/latest"
    )
