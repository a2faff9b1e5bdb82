"""Greedy decoding over grouped tokens (a location spread over many `<bin>` tokens weighed as one choice against
`</s>`), the same in the numpy sequences and the PyTorch loop; the tasks that group; sinusoidal `<bin>` init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomedgpt.model.constraints import Constraints, grouped_argmax
from biomedgpt.model.decode_spec import DecodeSpec, SpecialIds
from biomedgpt.model.generation import _greedy_choice, generate
from biomedgpt.serve.scheduler import Job, Scheduler
from biomedgpt.serve.sequences import new_sequence
from biomedgpt.serve.torch_step import TorchStepModel
from biomedgpt.tasks import get_task
from biomedgpt.tokenization.layout import DEFAULT_LAYOUT
from biomedgpt.tokenization.ranges import allowed_token_mask

EOS = 2
VOCAB = 300
BINS = np.zeros(VOCAB, dtype=bool)
BINS[100:200] = True


def _logprobs(eos: float, bins: dict[int, float], rest: float = 0.0) -> np.ndarray:
    """Log-probabilities with `eos` on `</s>`, `bins` on those bins, `rest` spread over the other bins."""
    probs = np.full(VOCAB, 1e-12)
    probs[EOS] = eos
    for token, p in bins.items():
        probs[token] = p
    others = [t for t in range(100, 200) if t not in bins]
    probs[others] = rest / len(others)
    return np.log(probs / probs.sum())


def test_bins_together_outweigh_eos_though_each_is_less_likely():
    # 70 % that a location comes next, spread over bins; 30 % the end. Plain argmax says "end".
    logprobs = _logprobs(0.30, {150: 0.10, 151: 0.09}, rest=0.51)
    assert int(logprobs.argmax()) == EOS
    assert grouped_argmax(logprobs, BINS) == 150
    assert grouped_argmax(logprobs, None) == EOS


def test_eos_wins_when_it_holds_more_than_all_bins():
    logprobs = _logprobs(0.60, {150: 0.05}, rest=0.35)
    assert grouped_argmax(logprobs, BINS) == EOS


def test_a_token_outside_the_group_beats_a_lighter_group():
    logprobs = _logprobs(0.10, {150: 0.05}, rest=0.15)
    logprobs[7] = np.log(0.7)  # another non-grouped token (a separator)
    assert grouped_argmax(logprobs, BINS) == 7


def test_all_bins_masked_out_falls_back_to_the_rest():
    logprobs = _logprobs(0.2, {150: 0.5}, rest=0.3)
    logprobs[BINS] = -np.inf
    assert grouped_argmax(logprobs, BINS) == EOS


def test_torch_rule_equals_numpy_rule_row_by_row():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((64, VOCAB)).astype(np.float32) * 3
    rows[::3, EOS] += 6.0  # some rows where the end is likely, some where the bins win together
    rows[1::4, :50] = -np.inf
    logprobs = rows - np.log(np.exp(np.where(np.isinf(rows), -np.inf, rows)).sum(axis=1, keepdims=True))
    best, tokens = _greedy_choice(torch.from_numpy(logprobs), torch.from_numpy(BINS))
    want = [grouped_argmax(row, BINS) for row in logprobs]
    assert tokens.tolist() == want
    assert torch.equal(best, torch.from_numpy(logprobs)[torch.arange(64), tokens])
    assert len(set(want) & {EOS}) and len(set(want) - {EOS})  # both outcomes occur
    _, plain = _greedy_choice(torch.from_numpy(logprobs), None)
    assert plain.tolist() == logprobs.argmax(axis=1).tolist()


def test_scheduler_and_pytorch_loop_decode_grouped_requests_alike(tiny_model):
    """A real model: the engines' sequences (through the scheduler) and `generate` give the same tokens with the
    bins grouped, and grouping changes what greedy writes (the group of 100 bins outweighs the end)."""
    c = tiny_model.config
    ids = SpecialIds(
        pad=c.pad_token_id, bos=c.bos_token_id, eos=c.eos_token_id, decoder_start=c.decoder_start_token_id
    )
    allowed = BINS.copy()
    allowed[ids.eos] = True
    g = np.random.default_rng(3)
    prompts = [np.concatenate([[0], g.integers(4, VOCAB, size=6), [2]]).astype(np.int64) for _ in range(4)]
    pixels = [g.standard_normal((3, 64, 64)).astype(np.float32) for _ in range(4)]
    for grouped in (None, BINS):
        spec = DecodeSpec(max_new_tokens=6, allowed_tokens=allowed, grouped_tokens=grouped)
        jobs = [
            Job(
                input_ids=p,
                pixels=x,
                sequence=new_sequence(spec, ids, constraints=Constraints(spec, ids, VOCAB)),
            )
            for p, x in zip(prompts, pixels, strict=True)
        ]
        Scheduler(TorchStepModel(tiny_model)).run(jobs)
        for job, p, x in zip(jobs, prompts, pixels, strict=True):
            out = generate(
                tiny_model,
                input_ids=torch.from_numpy(p[None]),
                patch_images=torch.from_numpy(x[None]),
                options=DecodeSpec(
                    max_new_tokens=6, allowed_tokens=torch.from_numpy(allowed), grouped_tokens=grouped
                ),
            ).sequences[0]
            assert job.sequence.result()[0] == [int(t) for t in out if int(t) != c.pad_token_id]
        if grouped is not None:  # an untrained model: 100 bins together outweigh the one end token
            assert all(job.sequence.result()[0][0] != ids.eos for job in jobs)


@pytest.mark.parametrize("name", ["segmentation", "detection", "grounding"])
def test_location_tasks_group_exactly_the_bins(name):
    layout = DEFAULT_LAYOUT
    grouped = get_task(name).grouped_token_mask(layout)
    bins = allowed_token_mask(layout, "bins")
    bins[layout.eos_id] = False
    assert grouped is not None and np.array_equal(grouped, bins)


@pytest.mark.parametrize("name", ["vqa", "caption", "classification", "report"])
def test_text_tasks_do_not_group(name):
    assert get_task(name).grouped_token_mask(DEFAULT_LAYOUT) is None


def test_sinusoidal_location_init_makes_neighbouring_bins_close():
    from biomedgpt.config import load_config
    from biomedgpt.model.build import build_model, build_processor
    from biomedgpt.run_config import RunConfig

    cfg = load_config(
        RunConfig, ["configs/model/tiny.yaml"], ["model.image_size=64", "model.location_init=sinusoidal"]
    )
    processor = build_processor(cfg)
    model = build_model(cfg, processor)
    first, last = processor.tokenizer.layout.bin_range
    weight = model.get_input_embeddings().weight.detach()
    rows = torch.nn.functional.normalize(weight[first : last + 1], dim=-1)
    near = (rows[:-1] * rows[1:]).sum(-1)  # each bin with the next
    far = (rows[:-300] * rows[300:]).sum(-1)  # 300 bins apart
    assert near.min() > 0.9 and far.mean() < 0.5
    assert abs(float(weight[first : last + 1].std()) - model.config.init_std) < 0.2 * model.config.init_std
    assert model.lm_head.weight.data_ptr() == weight.data_ptr()  # tied: the output layer sees the same rows
    random_cfg = load_config(RunConfig, ["configs/model/tiny.yaml"], ["model.image_size=64"])
    random_rows = build_model(random_cfg, processor).get_input_embeddings().weight.detach()[first : last + 1]
    assert float(torch.nn.functional.cosine_similarity(random_rows[:-1], random_rows[1:]).mean()) < 0.2
