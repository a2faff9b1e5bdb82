"""Where the tokenizer assets and the registry download cache live (pure Python, no heavy imports).

The committed assets sit in the repository's top-level `tokenizers/` folder (data only: it must never get
an `__init__.py`, which would shadow Hugging Face's `tokenizers` package). `default_tokenizer_dir` finds
an asset in this order:

1. `$BIOMEDGPT_TOKENIZER_DIR` if set (a folder holding `tokenizer.json`), for deployments that mount it;
2. `<repo>/tokenizers/<name>` next to the package (a source checkout or an editable install);
3. `biomedgpt/tokenization/assets/<name>` inside the installed package (package data): a wheel build
   that should carry the asset copies `tokenizers/<name>` there and lists it as package data.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TOKENIZER_NAME = "biomed-bpe-v1"
TOKENIZER_DIR_ENV = "BIOMEDGPT_TOKENIZER_DIR"
PACKAGE_ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def repo_root() -> Path | None:
    """The source checkout holding this package (it has pyproject.toml and tokenizers/), else None."""
    candidate = Path(__file__).resolve().parents[2]
    if (candidate / "pyproject.toml").is_file() and (candidate / "tokenizers").is_dir():
        return candidate
    return None


def tokenizer_dir_candidates(name: str = DEFAULT_TOKENIZER_NAME) -> list[Path]:
    """The folders `default_tokenizer_dir` tries, in order."""
    candidates: list[Path] = []
    if os.environ.get(TOKENIZER_DIR_ENV):
        candidates.append(Path(os.environ[TOKENIZER_DIR_ENV]))
    root = repo_root()
    if root is not None:
        candidates.append(root / "tokenizers" / name)
    candidates.append(PACKAGE_ASSETS_DIR / name)
    return candidates


def default_tokenizer_dir(name: str = DEFAULT_TOKENIZER_NAME) -> Path:
    """The first candidate folder that holds `tokenizer.json`; FileNotFoundError listing all tried."""
    candidates = tokenizer_dir_candidates(name)
    for folder in candidates:
        if (folder / "tokenizer.json").is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"tokenizer asset {name!r} not found (tried: {tried}); rebuild it with `biomedgpt tokenizer build-text`"
        f" or point ${TOKENIZER_DIR_ENV} at a folder holding tokenizer.json"
    )


def default_cache_dir() -> Path:
    """Gitignored download cache for registry packages: `<repo>/.cache/registry`, else `./.cache/registry`."""
    root = repo_root()
    return (root if root is not None else Path.cwd()) / ".cache" / "registry"
