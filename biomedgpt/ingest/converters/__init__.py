"""Converters from public dataset layouts to shards: the registry, `--format NAME` -> module.

One module per layout, each defining ``CONVERTER`` (a ``common.Converter``); this table is the only
place that lists them. Modules are imported on use, so importing this package stays cheap (the
`biomedgpt shard` command imports it to fill its ``FORMATS`` table).

    from biomedgpt.ingest.converters import convert
    convert("vqa-rad", "VQA_RAD/", "data_shards/vqa-rad")
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biomedgpt.ingest.converters.common import Converter, ConvertOptions, ConvertResult

CONVERTERS: dict[str, str] = {
    "vqa-rad": "biomedgpt.ingest.converters.vqa_rad",
    "slake": "biomedgpt.ingest.converters.slake",
    "pathvqa": "biomedgpt.ingest.converters.pathvqa",
    "iu-xray": "biomedgpt.ingest.converters.iu_xray",
    "mimic-cxr": "biomedgpt.ingest.converters.mimic_cxr",
    "medmnist": "biomedgpt.ingest.converters.medmnist",
    "dicom-folder": "biomedgpt.ingest.converters.dicom_folder",
    "volumes": "biomedgpt.ingest.converters.volume_pairs",
}
"""--format name -> module defining CONVERTER."""


def get_converter(name: str) -> Converter:
    """The converter registered as `name`; KeyError listing the known names otherwise."""
    if name not in CONVERTERS:
        raise KeyError(f"unknown format {name!r}; known: {', '.join(sorted(CONVERTERS))}")
    return importlib.import_module(CONVERTERS[name]).CONVERTER


def convert(
    fmt: str,
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    options: ConvertOptions | None = None,
    command_line: Sequence[str] | None = None,
    **writer_args: Any,
) -> ConvertResult:
    """Convert the dataset at `input_path` (layout `fmt`, a --format name) into shards in `out_dir`.

    `writer_args` go to `common.convert`: name, overwrite, max_samples_per_shard, max_bytes,
    licence, progress.
    """
    from biomedgpt.ingest.converters import common

    return common.convert(
        get_converter(fmt), input_path, out_dir, options=options, command_line=command_line, **writer_args
    )
