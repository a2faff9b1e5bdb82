"""File hashing shared by shards, registry downloads, tokenizer assets and checkpoints (stdlib only)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from biomedgpt.errors import ModelFileError

MANIFEST = "manifest.json"
NO_VERIFY_HINT = "restore it (re-export or re-import the model), or pass --no-verify to load it unchecked"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_hashes(folder: str | os.PathLike[str]) -> dict[str, str] | None:
    """The `files` of a model folder's manifest.json ({relative path: sha256}); None when there is no manifest
    or it records no hashes. A manifest that cannot be read is a `ModelFileError`."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text()).get("files")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise ModelFileError(f"{path} cannot be read ({err}); {NO_VERIFY_HINT}", path=str(path)) from None
    if files is None:
        return None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ModelFileError(f"{path}: `files` is not a map of file names to sha256 digests", path=str(path))
    return files


def verify_files(
    folder: str | os.PathLike[str],
    names: Iterable[str],
    *,
    require_manifest: bool,
    what: str = "the model folder",
    hint: str = NO_VERIFY_HINT,
) -> list[str]:
    """Check the files `names` (paths relative to `folder`) that a loader is about to read against the sha256
    digests of `folder/manifest.json`; returns the names checked. Each file is hashed once, streaming.

    - a file the manifest lists must exist and match;
    - a file that exists but is not listed is refused too (it would be read unchecked);
    - a file neither listed nor present is skipped (optional files: answers.json, serving.json, ...).

    Without a manifest (or one with no `files`) nothing is checked, unless `require_manifest`. Every refusal is
    a `ModelFileError` whose message is one line naming the file and ending with `hint`.
    """
    folder = Path(folder)
    hashes = manifest_hashes(folder)
    if hashes is None:
        if require_manifest:
            raise ModelFileError(
                f"{folder / MANIFEST} is missing or records no sha256 per file, so {what} cannot be checked; "
                f"{hint}",
                path=str(folder / MANIFEST),
            )
        return []
    checked = []
    for name in dict.fromkeys(names):
        path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelFileError(f"{name!r} is not a file inside {folder}", path=name)
        expected = hashes.get(name)
        if expected is None:
            if path.exists():
                raise ModelFileError(
                    f"{path} is not listed in {MANIFEST}, so it cannot be checked; {hint}", path=str(path)
                )
            continue
        if not path.is_file():
            raise ModelFileError(f"{path} is missing ({MANIFEST} lists it); {hint}", path=str(path))
        if sha256_file(path) != expected:
            raise ModelFileError(
                f"{path} does not match the sha256 in {MANIFEST} (changed or corrupted since it was written); "
                f"{hint}",
                path=str(path),
            )
        checked.append(name)
    return checked
