"""Decoding: parity with transformers' generate(), the answer trie, token ranges, n-gram blocking."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biomedgpt.model.constraints import AnswerTrie, banned_ngram_tokens
from biomedgpt.model.decode_spec import DecodeSpec
from biomedgpt.model.generation import generate

VOCAB = 300
SPECIALS = [0, 1, 3]  # bos, pad, unk: never generated


def _batch(seed: int = 1, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, 7), generator=g)
    ids[1, 5:] = 1
    images = torch.randn(batch, 3, 64, 64, generator=g)
    return {"input_ids": ids, "attention_mask": ids.ne(1), "patch_images": images}


def _allowed(exclude=SPECIALS):
    allowed = torch.ones(VOCAB, dtype=torch.bool)
    allowed[list(exclude)] = False
    return allowed


@pytest.mark.parametrize(("num_beams", "length_penalty"), [(1, 1.0), (3, 1.0), (3, 0.5), (3, 2.0), (5, 1.0)])
def test_matches_transformers_generate(tiny_model, num_beams, length_penalty):
    # A small allowed set (8 words + eos) makes eos a frequent outcome, so hypotheses end at varied lengths.
    keep = [2, *range(40, 48)]
    suppressed = [t for t in range(VOCAB) if t not in keep]
    batch = _batch()
    ours = generate(
        tiny_model,
        **batch,
        options=DecodeSpec(
            max_new_tokens=12,
            num_beams=num_beams,
            length_penalty=length_penalty,
            allowed_tokens=_allowed(suppressed),
        ),
    )
    theirs = tiny_model.generate(
        **batch,
        max_new_tokens=12,
        num_beams=num_beams,
        length_penalty=length_penalty,
        do_sample=False,
        suppress_tokens=suppressed,
    )
    theirs = theirs[:, 1:]  # drop the start token
    width = ours.sequences.shape[1]
    assert torch.equal(ours.sequences, theirs[:, :width])
    assert (theirs[:, width:] == 1).all()  # beyond our width transformers has only padding
    if num_beams == 1:
        assert (ours.sequences == 2).any(), "the test model should finish some sequences with eos"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    answers=st.lists(st.lists(st.integers(4, VOCAB - 1), min_size=1, max_size=4), min_size=1, max_size=6),
    num_beams=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 10),
)
def test_trie_decoding_only_emits_listed_answers(tiny_model, answers, num_beams, seed):
    trie = AnswerTrie(answers, eos_token_id=2)
    out = generate(
        tiny_model, **_batch(seed), options=DecodeSpec(max_new_tokens=8, num_beams=num_beams, trie=trie)
    )
    listed = {tuple(a) for a in answers}
    for row in out.sequences.tolist():
        tokens = [t for t in row if t != 1]
        assert tokens[-1] == 2, row
        assert tuple(tokens[:-1]) in listed, (row, answers)


def test_trie_rejects_and_contains():
    trie = AnswerTrie([[10, 11], [10, 12, 13], [20]], eos_token_id=2)
    assert sorted(trie.allowed([])) == [10, 20]
    assert sorted(trie.allowed([10])) == [11, 12]
    assert trie.allowed([10, 11]) == [2]
    assert trie.allowed([99]) == [2]
    assert trie.contains([10, 12, 13, 2]) and not trie.contains([10, 12])
    with pytest.raises(ValueError, match="at least one"):
        AnswerTrie([], eos_token_id=2)


def test_token_range_restriction(tiny_model):
    bins = torch.zeros(VOCAB, dtype=torch.bool)
    bins[200:250] = True  # pretend these are <bin> tokens
    out = generate(
        tiny_model, **_batch(), options=DecodeSpec(max_new_tokens=4, min_new_tokens=4, allowed_tokens=bins)
    )
    assert out.sequences.shape[1] == 4
    assert ((out.sequences >= 200) & (out.sequences < 250)).all()
    unrestricted = generate(tiny_model, **_batch(), options=DecodeSpec(max_new_tokens=4, min_new_tokens=4))
    assert not ((unrestricted.sequences >= 200) & (unrestricted.sequences < 250)).all()


def test_min_new_tokens_and_no_repeat_ngrams(tiny_model):
    out = generate(
        tiny_model,
        **_batch(),
        options=DecodeSpec(max_new_tokens=20, min_new_tokens=10, no_repeat_ngram_size=2),
    )
    for row in out.sequences.tolist():
        tokens = [t for t in row if t != 1]
        assert 2 not in tokens[:10]
        bigrams = list(itertools.pairwise(tokens))
        assert len(bigrams) == len(set(bigrams)), tokens


def test_banned_ngram_tokens():
    assert banned_ngram_tokens([5, 6, 7, 5], 2) == {6}
    assert banned_ngram_tokens([5, 6, 7, 5, 6], 3) == {7}
    assert banned_ngram_tokens([1, 2], 0) == set()


def test_decode_options_validate():
    with pytest.raises(ValueError, match="max_new_tokens"):
        DecodeSpec(max_new_tokens=0)
    with pytest.raises(ValueError, match="min_new_tokens"):
        DecodeSpec(max_new_tokens=4, min_new_tokens=5)
    with pytest.raises(ValueError, match="num_beams"):
        DecodeSpec(num_beams=0)


def test_batched_generation_equals_one_by_one(tiny_model):
    batch = _batch()
    opts = DecodeSpec(max_new_tokens=10, num_beams=2)
    together = generate(tiny_model, **batch, options=opts).sequences
    for i in range(3):
        n = int(batch["attention_mask"][i].sum())
        alone = generate(
            tiny_model,
            input_ids=batch["input_ids"][i : i + 1, :n],
            patch_images=batch["patch_images"][i : i + 1],
            options=opts,
        ).sequences
        width = alone.shape[1]
        assert torch.equal(together[i, :width], alone[0])
        assert (together[i, width:] == 1).all()


def test_beam_search_scores_at_least_greedy(tiny_model):
    batch = _batch()
    greedy = generate(tiny_model, **batch, options=DecodeSpec(max_new_tokens=10, length_penalty=0.0))
    beam = generate(
        tiny_model, **batch, options=DecodeSpec(max_new_tokens=10, num_beams=4, length_penalty=0.0)
    )
    assert (beam.scores >= greedy.scores - 1e-4).all()


# --- forced decoder prefixes (BiomedGPT's VQA reads the question in the decoder: `--prompt-type prev_output`) ---


@pytest.mark.parametrize("num_beams", [1, 3])
def test_decoder_prefix_matches_transformers_continuing_decoder_input_ids(tiny_model, num_beams):
    """A forced prefix is what transformers' `generate(decoder_input_ids=[start, *prefix])` continues from: the
    same tokens after it, scored (and length-normalized) over the generated tokens only."""
    keep = [2, *range(40, 48)]
    suppressed = [t for t in range(VOCAB) if t not in keep]
    batch = _batch(seed=4)
    g = torch.Generator().manual_seed(5)
    prefixes = torch.randint(4, VOCAB, (3, 4), generator=g)
    start = torch.full((3, 1), tiny_model.config.decoder_start_token_id)
    options = DecodeSpec(
        max_new_tokens=10,
        num_beams=num_beams,
        allowed_tokens=_allowed(suppressed),
        decoder_prefixes=prefixes.tolist(),
    )
    ours = generate(tiny_model, **batch, options=options).sequences
    theirs = tiny_model.generate(
        **batch,
        decoder_input_ids=torch.cat([start, prefixes], dim=1),
        max_new_tokens=10,
        num_beams=num_beams,
        do_sample=False,
        suppress_tokens=suppressed,
    )[:, 1 + prefixes.shape[1] :]
    width = ours.shape[1]
    assert torch.equal(ours, theirs[:, :width])
    assert (theirs[:, width:] == 1).all()
    unprefixed = generate(tiny_model, **batch, options=replace(options, decoder_prefixes=None)).sequences
    assert not torch.equal(ours[:, : unprefixed.shape[1]], unprefixed[:, : ours.shape[1]]), (
        "the prefix should change what this model decodes"
    )


@pytest.mark.parametrize("num_beams", [1, 2])
def test_prefixes_of_different_lengths_in_one_batch_equal_each_alone(tiny_model, num_beams):
    batch = _batch(seed=6)
    prefixes = [[50, 51, 52, 53, 54], [], [60, 61]]
    answers = AnswerTrie([[40, 41], [42], [43, 44, 45]], eos_token_id=2)
    opts = DecodeSpec(max_new_tokens=6, num_beams=num_beams, min_new_tokens=1, decoder_prefixes=prefixes)
    for trie in (None, answers):
        together = generate(tiny_model, **batch, options=replace(opts, trie=trie)).sequences
        for i in range(3):
            n = int(batch["attention_mask"][i].sum())
            alone = generate(
                tiny_model,
                input_ids=batch["input_ids"][i : i + 1, :n],
                patch_images=batch["patch_images"][i : i + 1],
                options=replace(opts, trie=trie, decoder_prefixes=[prefixes[i]]),
            ).sequences
            width = alone.shape[1]
            assert torch.equal(together[i, :width], alone[0])
            assert (together[i, width:] == 1).all()
            assert alone.shape[1] <= opts.max_new_tokens
            if trie is not None:
                assert answers.contains(alone[0].tolist()), alone


@pytest.mark.parametrize("num_beams", [1, 3])
def test_numpy_loop_forces_prefixes_as_the_torch_loop_does(tiny_model, num_beams):
    """The ONNX Runtime engine's numpy loop (`biomedgpt.serve.decoding`) gives the torch loop's tokens, with
    prefixes of different lengths, over the same model decoder."""
    import numpy as np

    from biomedgpt.model.generation import _Decoder, _expand_encoder_outputs
    from biomedgpt.serve.decoding import DecodeSpec, SpecialIds
    from biomedgpt.serve.decoding import decode as numpy_decode

    class TorchStep:  # the numpy loop's one-step interface over the model's decoder and KV cache
        def __init__(self, encoder_outputs, rows):
            self.inner = _Decoder(tiny_model, encoder_outputs, None, batch=rows, max_len=32)

        def step(self, tokens):
            return self.inner.step(torch.from_numpy(tokens)).numpy()

        def reorder(self, rows):
            self.inner.cache.reorder(torch.from_numpy(rows))

    batch = _batch(seed=7)
    prefixes = [[50, 51, 52], [70], [60, 61, 62, 63, 64]]
    opts = DecodeSpec(max_new_tokens=8, num_beams=num_beams, decoder_prefixes=prefixes)
    ours = generate(tiny_model, **batch, options=opts).sequences.numpy()
    with torch.no_grad():
        encoded = tiny_model.get_encoder()(**batch)
        step = TorchStep(_expand_encoder_outputs(encoded, num_beams), 3 * num_beams)
        config = tiny_model.config
        ids = SpecialIds(
            pad=config.pad_token_id,
            bos=config.bos_token_id,
            eos=config.eos_token_id,
            decoder_start=config.decoder_start_token_id,
        )
        spec = DecodeSpec(max_new_tokens=8, num_beams=num_beams, decoder_prefixes=prefixes)
        theirs, _ = numpy_decode(step, batch=3, spec=spec, ids=ids, vocab_size=VOCAB)
    assert np.array_equal(ours, theirs)


def test_decoder_prefix_from_a_prompt(tiny_model):
    from biomedgpt.model.constraints import decoder_prefix

    assert decoder_prefix([0, 7, 8, 9, 2], "prompt", bos=0, eos=2) == [7, 8, 9]
    assert decoder_prefix([0, 7, 8, 9, 2], "prompt+eos", bos=0, eos=2) == [7, 8, 9, 2]
    assert decoder_prefix([0, 7, 2], None, bos=0, eos=2) == []
    with pytest.raises(ValueError, match="unknown decoder_prefix 'question'"):
        decoder_prefix([0, 7, 2], "question", bos=0, eos=2)
    with pytest.raises(ValueError, match="decoder_prefixes has 1 rows for a batch of 3"):
        generate(tiny_model, **_batch(), options=DecodeSpec(decoder_prefixes=[[5]]))
