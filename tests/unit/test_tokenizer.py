"""BiomedGPTTokenizer on the committed biomed-bpe-v1 asset: round trips, prompts, codes, bins, transformers I/O."""

from __future__ import annotations

import random
import string

import numpy as np
import pytest

pytest.importorskip("transformers")

from biomedgpt.tokenization.layout import DEFAULT_LAYOUT
from biomedgpt.tokenization.locations import box_to_text, token_ids_to_bins
from biomedgpt.tokenization.unified import BiomedGPTTokenizer

SENTENCES = [
    " what does the image describe?",
    "Chest radiograph shows bilateral pleural effusion.",
    " The heart size is normal. There is no pneumothorax or focal consolidation.",
    " Magnetic resonance imaging revealed a hyperintense lesion in the left temporal lobe.",
    " Immunohistochemistry: Ki-67 index 35%, p53 (+), CD20-negative; β-catenin ≥ 2+ in 80% of cells.",
    "  two leading spaces, a tab\tand a newline\n kept",
]
BIOMEDICAL_WORDS = [
    "pneumothorax",
    "effusion",
    "radiograph",
    "cardiomegaly",
    "glioblastoma",
    "adenocarcinoma",
    "echocardiography",
    "hepatocellular",
    "carcinoma",
    "metastasis",
    "lymphadenopathy",
    "pulmonary",
    "embolism",
    "mammography",
    "biopsy",
    "histopathology",
    "consolidation",
    "atelectasis",
    "pericardial",
    "myocardial",
    "infarction",
]


@pytest.fixture(scope="module")
def tok() -> BiomedGPTTokenizer:
    return BiomedGPTTokenizer.load_default()


def test_load_default_has_the_pinned_layout(tok) -> None:
    assert isinstance(tok, BiomedGPTTokenizer)
    assert len(tok) == 32768
    assert tok.layout == DEFAULT_LAYOUT
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == DEFAULT_LAYOUT.mask_id
    assert tok.convert_tokens_to_ids(["<code_0>", "<code_8191>", "<bin_0>", "<bin_999>"]) == [
        23576,
        31767,
        31768,
        32767,
    ]


@pytest.mark.parametrize("text", SENTENCES)
def test_encode_decode_round_trip(tok, text) -> None:
    ids = tok.encode_prompt(text)
    assert ids[0] == tok.layout.bos_id and ids[-1] == tok.layout.eos_id
    assert all(tok.layout.is_text(i) for i in ids[1:-1])
    assert tok.decode_text(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok(text)["input_ids"] == ids  # the transformers call agrees with encode_prompt


def test_leading_space_is_part_of_the_first_piece(tok) -> None:
    with_space = tok.convert_ids_to_tokens(tok.encode_prompt(" what does the image describe?"))
    assert with_space == ["<s>", "Ġwhat", "Ġdoes", "Ġthe", "Ġimage", "Ġdescribe", "?", "</s>"]
    without = tok.encode_prompt("what does the image describe?")
    assert tok.convert_ids_to_tokens(without[1])[0] != "Ġ"  # add_prefix_space=False
    assert without[2:] == tok.encode_prompt(" what does the image describe?")[2:]


def test_biomedical_words_are_compact(tok) -> None:
    # a broken or truncated merges table would split these like random strings
    def pieces(word: str) -> int:
        return len(tok.encode_prompt(" " + word)) - 2

    bio = [pieces(w) for w in BIOMEDICAL_WORDS]
    rng = random.Random(0)
    junk = ["".join(rng.choice(string.ascii_lowercase) for _ in range(len(w))) for w in BIOMEDICAL_WORDS]
    rand = [pieces(w) for w in junk]
    assert np.mean(bio) <= 1.6, dict(zip(BIOMEDICAL_WORDS, bio))
    assert np.mean(rand) >= 2.5 * np.mean(bio)
    for word in ("pneumothorax", "effusion", "radiograph", "glioblastoma", "pleural"):
        assert pieces(word) == 1, word


def test_codes_bins_and_mask_are_single_tokens(tok) -> None:
    layout = tok.layout
    text = box_to_text([10, 20, 300, 200], width=640, height=480) + " lesion"
    ids = tok.encode_prompt(" " + text)
    assert [layout.is_bin(i) for i in ids[1:5]] == [True] * 4  # spaces before bins are absorbed (as OFA)
    assert token_ids_to_bins(ids[1:5], layout) == [16, 42, 468, 416]
    assert tok.convert_ids_to_tokens(ids[5]) == "Ġlesion"
    masked = tok.encode_prompt(' what is the complete text of " the <mask> was enlarged "?')
    assert masked.count(layout.mask_id) == 1
    assert tok.encode_prompt("<code_5><code_8191>")[1:-1] == tok.code_ids([5, 8191])


def test_decode_text_drops_specials_codes_and_bins(tok) -> None:
    layout = tok.layout
    ids = [layout.bos_id, *tok.encode_prompt(" a nodule")[1:-1], layout.code_id(7), layout.bin_id(3)]
    ids += [layout.mask_id, layout.pad_id, layout.eos_id, layout.pad_id]
    assert tok.decode_text(ids) == " a nodule"
    assert tok.decode_text(np.array(ids)) == " a nodule"


def test_code_and_bin_helpers(tok) -> None:
    assert tok.code_ids([0, 1, 8191]) == [23576, 23577, 31767]
    assert tok.code_indices([23576, 31767]) == [0, 8191]
    assert tok.bin_ids(np.array([0, 999])) == [31768, 32767]
    with pytest.raises(ValueError, match=r"code index 8192 is out of range"):
        tok.code_ids([8192])
    with pytest.raises(ValueError, match=r"token id 31768 is not an image-code token"):
        tok.code_indices([31768])
    with pytest.raises(TypeError, match="expects a str"):
        tok.encode_prompt(["not", "a", "string"])  # type: ignore[arg-type]


def test_plain_transformers_loading_and_save_round_trip(tok, tmp_path) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from biomedgpt.tokenization.paths import default_tokenizer_dir

    plain = PreTrainedTokenizerFast.from_pretrained(str(default_tokenizer_dir()))
    auto = AutoTokenizer.from_pretrained(str(default_tokenizer_dir()))
    text = SENTENCES[1]
    assert plain(text)["input_ids"] == auto(text)["input_ids"] == tok.encode_prompt(text)
    assert plain.pad_token_id == 1 and plain.mask_token_id == DEFAULT_LAYOUT.mask_id
    batch = tok([SENTENCES[0], SENTENCES[2]], padding=True)
    assert batch["input_ids"][0][-1] == tok.layout.pad_id  # right padding with <pad>
    tok.save_pretrained(tmp_path)
    again = BiomedGPTTokenizer.from_pretrained(str(tmp_path))
    assert again.layout == DEFAULT_LAYOUT
    assert again.encode_prompt(text) == tok.encode_prompt(text)


def test_layout_detects_tokens_added_later(tok, tmp_path) -> None:
    tok.save_pretrained(tmp_path)
    changed = BiomedGPTTokenizer.from_pretrained(str(tmp_path))
    changed.add_tokens(["<extra_token>"])
    with pytest.raises(RuntimeError, match="does not match the vocabulary layout"):
        _ = changed.layout
