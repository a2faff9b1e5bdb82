"""`biomedgpt import`: fairseq OFA/BiomedGPT checkpoints -> model folders, read safely and checked strictly.

Fixtures are written here (tests/ofa_fixtures.py): a tiny BPE folder in OFA's format and fairseq-layout
checkpoints with random weights under OFA's key names.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle

import pytest
import torch

from biomedgpt.cli import main
from biomedgpt.model.convert.safe_pickle import UnsafePickleError, load_plain_pickle, load_torch_checkpoint
from tests.ofa_fixtures import (
    ofa_options,
    ofa_state_dict,
    random_ofa_model,
    reference_ids,
    write_bpe_dir,
    write_fairseq_checkpoint,
)

TEXTS = [
    " what does the image describe?",
    " is there a lesion in the left lung?",
    ' which region does the text " the whale " describe?',
    "café 5µm, 12.5% -- naïve!",
    "  two leading spaces and a trailing one ",
    "digits 0123456789 and tabs\tand\nnewlines",
    " markers are text, as in OFA: <unk> <s> </s> <mask> <bin_3> <code_7>",
]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    return write_bpe_dir(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def vocab_size(bpe_dir):
    from biomedgpt.tokenization.ofa_bpe import build_ofa_tokenizer

    return len(build_ofa_tokenizer(bpe_dir))


@pytest.fixture(scope="module")
def source_model(vocab_size):
    return random_ofa_model(vocab_size=vocab_size, seed=1)


def _import(tmp_path, bpe_dir, ckpt, *extra: str) -> int:
    return main(["import", str(ckpt), "--out", str(tmp_path / "out"), "--bpe-dir", str(bpe_dir), *extra])


def _inputs(tokenizer, *, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    prompts = [tokenizer.encode_prompt(" what is this?"), tokenizer.encode_prompt(" the whale is")]
    width = max(map(len, prompts))
    ids = torch.tensor([p + [1] * (width - len(p)) for p in prompts])
    images = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    decoder = torch.tensor([[0, 246, 87, 130, 22], [0, 203, 16, 1, 1]])
    return ids, images, decoder


def _logits(model, ids, images, decoder, **kwargs):
    with torch.no_grad():
        return model(
            ids, attention_mask=ids.ne(1), patch_images=images, decoder_input_ids=decoder, **kwargs
        ).logits


# --- tokenizer ------------------------------------------------------------------------------------------


def test_tokenizer_gives_ofa_ids_through_the_dictionary(bpe_dir, vocab_size):
    from transformers import AutoTokenizer

    from biomedgpt.tokenization.ofa_bpe import build_ofa_tokenizer
    from biomedgpt.tokenization.unified import BiomedGPTTokenizer

    tokenizer = build_ofa_tokenizer(bpe_dir)
    for text in TEXTS:
        assert tokenizer.encode_prompt(text) == reference_ids(bpe_dir, text), text
    layout = tokenizer.layout
    assert (layout.mask_id, layout.code_id(0), layout.bin_id(999)) == (
        vocab_size - 9193,
        vocab_size - 9192,
        vocab_size - 1,
    )
    assert tokenizer.convert_tokens_to_ids("<bin_0>") == layout.bin_id(0)
    # Saved and reloaded by both loaders: the same ids.
    folder = bpe_dir.parent / "tok"
    tokenizer.save_pretrained(str(folder))
    auto = AutoTokenizer.from_pretrained(str(folder))
    ours = BiomedGPTTokenizer.from_pretrained(str(folder))
    for text in TEXTS:
        assert auto(text).input_ids == ours.encode_prompt(text) == reference_ids(bpe_dir, text)
    assert len(auto) == len(ours) == vocab_size


def test_bpe_folder_missing_a_file_is_refused(tmp_path, bpe_dir):
    from biomedgpt.tokenization.ofa_bpe import BpeFolderError, build_ofa_tokenizer

    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / name).write_bytes((bpe_dir / name).read_bytes())
    with pytest.raises(BpeFolderError, match=r"dict\.txt"):
        build_ofa_tokenizer(tmp_path)


# --- faithful weights --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg_style", ["omegaconf", "dict", "args"])
def test_import_reproduces_the_source_model(tmp_path, bpe_dir, source_model, cfg_style):
    from biomedgpt.model.processing import load_pretrained

    state = ofa_state_dict(source_model)
    ckpt = write_fairseq_checkpoint(tmp_path / "ckpt.pt", state, options=ofa_options(), cfg_style=cfg_style)
    (tmp_path / "answers.txt").write_text("yes\nno\nleft lung\n")
    assert _import(tmp_path, bpe_dir, ckpt, "--answers", str(tmp_path / "answers.txt")) == 0
    model, processor = load_pretrained(tmp_path / "out")
    ids, images, decoder = _inputs(processor.tokenizer)
    expected = _logits(source_model, ids, images, decoder, patch_masks=torch.tensor([True, False]))
    got = _logits(model, ids, images, decoder, patch_masks=torch.tensor([True, False]))
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(got, expected, atol=1e-5 * float(expected.abs().max()), rtol=1e-5)
    codes = torch.tensor([True, False])
    torch.testing.assert_close(
        _logits(model, ids, images, decoder, code_masks=codes),
        _logits(source_model, ids, images, decoder, code_masks=codes),
    )
    serving = json.loads((tmp_path / "out" / "serving.json").read_text())
    assert serving["tasks"] == ["vqa"] and serving["prompts"] == {"vqa": " {question}"}
    assert json.loads((tmp_path / "out" / "answers.json").read_text()) == {"vqa": ["yes", "no", "left lung"]}
    report = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert report["options_from"] == ("args" if cfg_style == "args" else "cfg.model")
    assert "encoder.token_rp_bucket" in report["tensors"]["dropped"]
    assert "lr" in report["ignored_options"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["imported_from"]["sha256"]) == 64 and "model.safetensors" in manifest["files"]


def test_ema_weights_fp16_and_every_option_biomedgpt_uses(tmp_path, bpe_dir, vocab_size):
    """--weights ema takes extra_state's EMA (its fp32 copy); fp16 tensors, entangled positions, residual
    scaling and a frozen stem (no num_batches_tracked) map too."""
    from biomedgpt.model.processing import load_pretrained

    overrides = dict(entangle_position_embedding=True, disable_entangle=False, scale_resids=True)
    model = random_ofa_model(vocab_size=vocab_size, seed=2, **overrides)
    ema_model = random_ofa_model(vocab_size=vocab_size, seed=3, **overrides)
    state = {k: v for k, v in ofa_state_dict(model).items() if not k.endswith("num_batches_tracked")}
    ema = {k: v for k, v in ofa_state_dict(ema_model).items() if not k.endswith("num_batches_tracked")}
    options = ofa_options(freeze_resnet=True, **overrides)
    ckpt = write_fairseq_checkpoint(tmp_path / "c.pt", state, options=options, ema=ema, fp16=True)
    assert _import(tmp_path, bpe_dir, ckpt, "--weights", "ema", "--task", "caption") == 0
    imported, processor = load_pretrained(tmp_path / "out")
    assert (
        imported.config.scale_resids
        and not imported.config.disable_entangle
        and imported.config.freeze_resnet
    )
    ids, images, decoder = _inputs(processor.tokenizer)
    expected = _logits(ema_model, ids, images, decoder)  # exact fp32 EMA parameters, not the fp16 copy
    torch.testing.assert_close(_logits(imported, ids, images, decoder), expected, atol=1e-4, rtol=1e-4)
    assert (expected - _logits(model, ids, images, decoder)).abs().max() > 1e-2


# --- refusals -----------------------------------------------------------------------------------------


class _WritesAFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_checkpoint_and_answer_pickle_are_refused_with_nothing_executed(tmp_path, bpe_dir, capsys):
    marker = tmp_path / "pwned"
    torch.save({"model": {"x": torch.ones(1)}, "args": _WritesAFile(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError, match="system"):
        load_torch_checkpoint(tmp_path / "evil.pt")
    assert _import(tmp_path, bpe_dir, tmp_path / "evil.pt") == 2
    assert "refused to load global" in capsys.readouterr().err
    (tmp_path / "ans.pkl").write_bytes(pickle.dumps({"yes": 0, "x": _WritesAFile(str(marker))}))
    with pytest.raises(UnsafePickleError):
        load_plain_pickle(tmp_path / "ans.pkl")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_answer_lists_from_biomedgpt_pickle_json_and_text(tmp_path):
    from biomedgpt.commands.import_cmd import read_answers

    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"no": 1, "yes": 0, "left": 2}, protocol=2))
    (tmp_path / "a.json").write_text(json.dumps({"no": 1, "yes": 0}))
    (tmp_path / "a.txt").write_text("yes\n\nno\nyes\n")
    assert read_answers(tmp_path / "a.pkl") == ["yes", "no", "left"]
    assert read_answers(tmp_path / "a.json") == ["yes", "no"]
    assert read_answers(tmp_path / "a.txt") == ["yes", "no"]


@pytest.mark.parametrize(
    "change, message",
    [
        ("missing", "decoder.layers.1.fc2.weight"),
        ("shape", "encoder.layers.0.self_attn.q_proj.weight: checkpoint (64, 32)"),
        ("unexpected", "unexpected key encoder.layers.0.adapter.up_proj.weight"),
        ("option", "encoder_prompt=True"),
        ("buckets", "token_rp_bucket differs"),
        ("untied", "decoder.output_projection.weight differs"),
    ],
)
def test_bad_checkpoints_are_refused_naming_the_problem(
    tmp_path, bpe_dir, source_model, capsys, change, message
):
    state = ofa_state_dict(source_model)
    options = ofa_options()
    if change == "missing":
        del state["decoder.layers.1.fc2.weight"]
    elif change == "shape":
        state["encoder.layers.0.self_attn.q_proj.weight"] = torch.zeros(64, 32)
    elif change == "unexpected":
        state["encoder.layers.0.adapter.up_proj.weight"] = torch.zeros(4, 4)
    elif change == "option":
        options["encoder_prompt"] = True
    elif change == "buckets":
        options["token_bucket_size"] = 128  # the saved tables are for 256
    elif change == "untied":
        state["decoder.output_projection.weight"] = state["decoder.output_projection.weight"] + 1
    ckpt = write_fairseq_checkpoint(tmp_path / "bad.pt", state, options=options)
    assert _import(tmp_path, bpe_dir, ckpt, "--task", "caption") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_answers_vqa_decodes_open_ended_and_an_unknown_arch_is_refused(
    tmp_path, bpe_dir, source_model, capsys
):
    from biomedgpt.serve.engines import load_engine
    from biomedgpt.serve.types import TaskRequest

    state = ofa_state_dict(source_model)
    ckpt = write_fairseq_checkpoint(tmp_path / "a.pt", state, options=ofa_options(), task={"_name": "ofa"})
    assert _import(tmp_path, bpe_dir, ckpt) == 0  # OFA's base task: the pretraining tasks
    assert "vqa will decode open-ended" in capsys.readouterr().err
    serving = json.loads((tmp_path / "out" / "serving.json").read_text())
    assert serving["tasks"] == ["caption", "vqa", "grounding", "detection"]
    assert json.loads((tmp_path / "out" / "answers.json").read_text()) == {}
    engine = load_engine(tmp_path / "out", engine="torch")
    plan = engine.plan(TaskRequest(task="vqa", image=None, fields={"question": "is there a lesion"}))
    assert not plan.use_trie
    ckpt = write_fairseq_checkpoint(tmp_path / "b.pt", state, options=ofa_options(arch="ofa_giant"))
    assert _import(tmp_path, bpe_dir, ckpt, "--task", "caption", "--overwrite") == 2
    assert "arch='ofa_giant'" in capsys.readouterr().err


def test_optimizer_state_is_never_read(tmp_path, source_model, monkeypatch):
    """Only the tensors that are kept are read from the archive (memory: weights, not the whole file)."""
    from biomedgpt.model.convert import safe_pickle

    state = ofa_state_dict(source_model)
    ckpt = write_fairseq_checkpoint(tmp_path / "c.pt", state, options=ofa_options(), ema=state)
    loaded = load_torch_checkpoint(ckpt)
    reads: list[str] = []
    original = safe_pickle._Archive.read_storage
    monkeypatch.setattr(
        safe_pickle._Archive, "read_storage", lambda self, key: reads.append(key) or original(self, key)
    )
    optimizer = loaded["last_optimizer_state"]["state"][0]["exp_avg"]
    assert isinstance(optimizer, safe_pickle.LazyTensor) and reads == []
    weight = loaded["model"]["encoder.layers.0.fc1.weight"].materialize()
    torch.testing.assert_close(weight, state["encoder.layers.0.fc1.weight"])
    assert len(reads) == 1
    assert isinstance(loaded["args"], type(None)) and isinstance(loaded["cfg"]["model"], dict)
    assert not isinstance(loaded["cfg"]["model"], argparse.Namespace)


def test_vqa_prompt_type_becomes_the_folders_decoder_prefix():
    """OFA's `--prompt-type` decides whether the decoder reads the question before the answer; the folder
    records it for the VQA task only, and an unknown value is refused by name."""
    from biomedgpt.commands.import_cmd import decoder_prefixes

    assert decoder_prefixes({"_name": "vqa_gen", "prompt_type": "prev_output"}, ["vqa"]) == {"vqa": "prompt"}
    assert decoder_prefixes({"_name": "vqa_gen", "prompt_type": "src"}, ["vqa"]) == {"vqa": "prompt+eos"}
    assert decoder_prefixes({"_name": "vqa_gen", "prompt_type": "none"}, ["vqa"]) == {}
    assert decoder_prefixes({"_name": "vqa_gen"}, ["vqa"]) == {}
    assert decoder_prefixes({"_name": "caption", "prompt_type": "prev_output"}, ["caption"]) == {}
    with pytest.raises(ValueError, match="prompt_type='question'"):
        decoder_prefixes({"_name": "vqa_gen", "prompt_type": "question"}, ["vqa"])
