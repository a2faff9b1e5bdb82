"""OFA's tokenizer as one fast `tokenizer.json`: GPT-2 byte-level BPE, then fairseq's Dictionary, then the
unified tokens.

OFA (and BiomedGPT) encode text in two steps (`data/ofa_dataset.py` `encode_text`, fairseq's `GPT2BPE` and
`Dictionary.encode_line`): GPT-2's BPE (`encoder.json` + `vocab.bpe`) gives GPT-2 ids, written as decimal
strings; the dictionary `dict.txt` maps each such string to a model id: `<s>`=0, `<pad>`=1, `</s>`=2,
`<unk>`=3, then the file's lines in order (id 4 + line number). Then come `<mask>`, 8,192 `<code_i>` and 1,000
`<bin_i>` (OFA's `tasks/ofa_task.py`), 59,457 ids with OFA's 50,260-line dictionary.

Folding the dictionary into the BPE vocabulary (each GPT-2 piece keyed by its model id) gives one tokenizer
whose ids are the model's directly, with OFA's `<s> ... </s>` added around a text. GPT-2 pieces absent from
the dictionary map to `<unk>`, as `encode_line` maps unknown symbols.

Markers written inside a text (`<unk>`, `<mask>`, `<bin_3>`, ...) are encoded as text, exactly as OFA's
`encode_text` BPE-encodes them (`split_special_tokens`, saved in tokenizer_config.json); OFA's data code puts
mask, code and bin ids into sequences as ids, never through the BPE, and so do our tasks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biomedgpt.tokenization.layout import SPECIAL_TOKENS, UNK_TOKEN, VocabLayout

BPE_FILES = ("encoder.json", "vocab.bpe", "dict.txt")


class BpeFolderError(ValueError):
    """The BPE folder is missing a file or holds something OFA's code would not read."""


def read_dictionary(path: Path) -> list[str]:
    """fairseq `Dictionary.add_from_file`: one `<symbol> <count>` per line (an optional `#fairseq:overwrite`
    flag after the count); returns the symbols in order."""
    symbols = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.rstrip()
        if not line:
            continue
        if line.endswith(" #fairseq:overwrite"):
            line = line[: -len(" #fairseq:overwrite")]
        symbol, sep, count = line.rpartition(" ")
        if not sep or not count.lstrip("-").isdigit():
            raise BpeFolderError(f"{path}:{number}: expected '<symbol> <count>', got {raw!r}")
        symbols.append(symbol)
    return symbols


def _read_merges(path: Path) -> list[tuple[str, str]]:
    merges = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BpeFolderError(f"{path}:{number}: a merge is two pieces, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def ofa_vocabulary(bpe_dir: Path) -> tuple[dict[str, int], list[tuple[str, str]], int]:
    """(GPT-2 piece -> model id, merges, number of dictionary lines) for OFA's `utils/BPE` folder."""
    missing = [name for name in BPE_FILES if not (bpe_dir / name).is_file()]
    if missing:
        raise BpeFolderError(f"{bpe_dir} lacks {', '.join(missing)} (OFA's utils/BPE folder has all three)")
    encoder: dict[str, int] = json.loads((bpe_dir / "encoder.json").read_text(encoding="utf-8"))
    piece_of = {gpt2_id: piece for piece, gpt2_id in encoder.items()}
    symbols = read_dictionary(bpe_dir / "dict.txt")
    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for line_index, symbol in enumerate(symbols):
        model_id = len(SPECIAL_TOKENS) + line_index
        # GPT-2 ids appear as decimal strings; other symbols (fairseq's `madeupword0000` fillers) as themselves.
        piece = piece_of.get(int(symbol)) if symbol.isdigit() else symbol
        if piece is None:
            raise BpeFolderError(f"dict.txt line {line_index + 1}: GPT-2 id {symbol} is not in encoder.json")
        vocab.setdefault(piece, model_id)
    merges = _read_merges(bpe_dir / "vocab.bpe")
    unk = vocab[UNK_TOKEN]
    for a, b in merges:  # pieces the merges produce but the dictionary lacks: fairseq reads them as <unk>
        for piece in (a, b, a + b):
            vocab.setdefault(piece, unk)
    return vocab, merges, len(symbols)


def build_ofa_tokenizer(bpe_dir: str | Path) -> Any:
    """A `BiomedGPTTokenizer` giving the ids OFA's data code feeds its model, from OFA's `utils/BPE` folder."""
    from biomedgpt.tokenization.build_text_bpe import add_unified_tokens
    from biomedgpt.tokenization.unified import BiomedGPTTokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab, merges, num_text = ofa_vocabulary(Path(bpe_dir))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK_TOKEN, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    layout = VocabLayout(num_text=num_text)
    add_unified_tokens(backend, layout)
    tokenizer = BiomedGPTTokenizer(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token=UNK_TOKEN,
        mask_token="<mask>",
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
        split_special_tokens=True,
    )
    if len(tokenizer) != layout.vocab_size:
        raise BpeFolderError(f"the tokenizer has {len(tokenizer)} ids, the layout {layout.vocab_size}")
    return tokenizer
