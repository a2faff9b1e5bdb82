"""Where a training run's checkpoint folders are, and how one is published: renamed from its `.partial` name when
complete, then `latest` pointed at it (both atomic). Standard library only, so the launcher reads a run's folders
(to resume, to check one) before PyTorch Lightning loads; `biomedgpt.train.checkpoint` writes them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LATEST = "latest"
TRAINER_STATE = Path("trainer_state") / "lightning.ckpt"


def publish(partial: Path, final: Path) -> None:
    """Rename a complete `.partial` folder to its final name, then point `latest` at it (both atomic)."""
    if final.exists():  # a re-run that reached the same step: the new folder replaces it
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(partial, final)
    pointer = final.parent / f".{LATEST}.tmp-{os.getpid()}"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, final.parent / LATEST)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder under `root` (a run's checkpoints/ folder), or None."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "manifest.json").is_file():
            return candidate
    complete = sorted(p for p in root.glob("step-*") if (p / "manifest.json").is_file())
    return complete[-1] if complete else None


def clean_partials(root: Path) -> None:
    """Remove what a writer killed mid-way leaves: folders that never got a final name, a replaced folder not yet
    deleted (`publish`), a `latest` pointer not yet renamed."""
    for path in [*root.glob(".step-*.partial*"), *root.glob(".step-*.old-*")]:
        shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(f".{LATEST}.tmp-*"):
        path.unlink(missing_ok=True)
