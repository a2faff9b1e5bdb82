"""Our decoding loop: greedy and beam search over a preallocated KV cache, with BiomedGPT's constraints.

Why our own loop beside `generate()`: it writes the KV cache in place (`StaticKVCache`), computes logits for the
last position only, and applies the constraints BiomedGPT needs as one additive mask per step:
- token-range restriction (text only for captions and answers, `<bin>` only for boxes, `<code>` only for images),
  which also stops image-code tokens leaking into captions, a known trap of the OFA ports;
- closed-set decoding with an `AnswerTrie` (VQA, classification);
- `min_new_tokens`, `no_repeat_ngram_size`, and beam search with a length penalty (score / length ** penalty,
  length counting generated tokens including eos, as in transformers);
- forced decoder prefixes (`decoder_prefixes`): BiomedGPT's VQA models read the question again in the decoder
  before the answer (OFA's `--prompt-type prev_output`); the prefix conditions, and is neither scored nor returned.
`tests/unit/test_generation.py` ties greedy and beam outputs to transformers' `generate()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from biomedgpt.model.cache import StaticKVCache
from biomedgpt.model.constraints import Constraints
from biomedgpt.model.decode_spec import DecodeSpec, SpecialIds


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (B, L) generated tokens, eos included, padded with pad_token_id
    scores: torch.Tensor  # (B,) sum of log-probs (greedy) or length-normalized beam score


class _Decoder:
    """The model's decoder + output projection behind a one-step interface."""

    def __init__(self, model, encoder_outputs, code_masks, *, batch: int, max_len: int) -> None:
        config = model.config
        first = next(model.parameters())
        self.model = model
        self.encoder_outputs = encoder_outputs
        self.code_masks = code_masks
        self.cache = StaticKVCache(
            num_layers=config.decoder_layers,
            batch=batch,
            num_heads=config.decoder_attention_heads,
            head_dim=config.d_model // config.decoder_attention_heads,
            max_len=max_len,
            dtype=first.dtype,
            device=first.device,
        )

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, 1) -> log-probs (N, V) of the next token."""
        hidden, _ = self.model.model.decoder(
            tokens, self.encoder_outputs, code_masks=self.code_masks, past_key_values=self.cache
        )
        logits = self.model.lm_head(hidden[:, -1])  # (N, V)
        return F.log_softmax(logits.float(), dim=-1)


def _expand_encoder_outputs(encoder_outputs, times: int):
    """Repeat each sample's encoder outputs `times` times (beams), as transformers does."""
    if times == 1:
        return encoder_outputs
    return type(encoder_outputs)(
        **{
            k: v.repeat_interleave(times, dim=0) if isinstance(v, torch.Tensor) else v
            for k, v in encoder_outputs.items()
        }
    )


class _Constraints:
    """`Constraints` (numpy, shared with the engines) as a (N, V) tensor on the model's device."""

    def __init__(self, options: DecodeSpec, config, vocab_size: int, device: torch.device) -> None:
        ids = SpecialIds(
            pad=config.pad_token_id,
            bos=config.bos_token_id,
            eos=config.eos_token_id,
            decoder_start=config.decoder_start_token_id,
        )
        self.rules = Constraints(options, ids, vocab_size)
        self.device = device

    def __call__(self, step: int | list[int], rows: list[list[int]]) -> torch.Tensor:
        """`step`: tokens generated so far, for all rows or per row."""
        return torch.from_numpy(np.array(self.rules(step, rows), dtype=np.float32)).to(self.device)


def _greedy_choice(logprobs: torch.Tensor, grouped: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) -> each row's (log-prob, token) of greedy's choice: argmax, or with `grouped` ((V,) bool) the rule
    of `constraints.grouped_argmax` (the group's total probability against each other token's)."""
    if grouped is None:
        return logprobs.max(dim=-1)
    inside = logprobs.masked_fill(~grouped, float("-inf"))
    best_out, token_out = logprobs.masked_fill(grouped, float("-inf")).max(dim=-1)
    best_in, token_in = inside.max(dim=-1)
    take = torch.isfinite(best_in) & torch.logsumexp(inside, dim=-1).ge(best_out)
    return torch.where(take, best_in, best_out), torch.where(take, token_in, token_out)


@torch.no_grad()
def generate(
    model,
    *,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    patch_images: torch.Tensor | None = None,
    patch_masks: torch.Tensor | None = None,
    code_masks: torch.Tensor | None = None,
    options: DecodeSpec | None = None,
) -> GenerationOutput:
    """Decode from a `BiomedGPTForConditionalGeneration` with our loop (greedy when num_beams == 1)."""
    options = options or DecodeSpec()
    encoder_outputs = model.get_encoder()(
        input_ids, attention_mask=attention_mask, patch_images=patch_images, patch_masks=patch_masks
    )
    return decode(model, encoder_outputs, code_masks=code_masks, options=options)


@torch.no_grad()
def decode(
    model, encoder_outputs, *, code_masks: torch.Tensor | None = None, options: DecodeSpec | None = None
) -> GenerationOutput:
    """Decode from precomputed encoder outputs (greedy when num_beams == 1, else beam search)."""
    options = options or DecodeSpec()
    if options.do_sample:
        raise ValueError(
            "the PyTorch loop decodes greedy or with beams; sampling runs in the engines' scheduler"
        )
    batch = encoder_outputs.last_hidden_state.shape[0]
    if options.decoder_prefixes is not None and len(options.decoder_prefixes) != batch:
        raise ValueError(f"decoder_prefixes has {len(options.decoder_prefixes)} rows for a batch of {batch}")
    if options.num_beams == 1:
        return _greedy(model, encoder_outputs, code_masks, options)
    return _beam_search(model, encoder_outputs, code_masks, options)


class _Prefixes:
    """Forced decoder prefixes: which rows are still reading theirs at a step, and the token each must take."""

    def __init__(self, prefixes: list[list[int]] | None, batch: int) -> None:
        self.prefixes = prefixes or [[] for _ in range(batch)]
        self.lengths = [len(p) for p in self.prefixes]
        self.longest = max(self.lengths, default=0)

    def force(self, step: int, logprobs: torch.Tensor, rows_per_sample: int = 1) -> torch.Tensor:
        """Rows still in their prefix at `step` may take only the prefix token, at no cost."""
        if step >= self.longest:
            return logprobs
        logprobs = logprobs.clone()
        for b, prefix in enumerate(self.prefixes):
            if step < len(prefix):
                block = slice(b * rows_per_sample, (b + 1) * rows_per_sample)
                logprobs[block] = float("-inf")
                logprobs[block, prefix[step]] = 0.0
        return logprobs


def _greedy(model, encoder_outputs, code_masks, options: DecodeSpec) -> GenerationOutput:
    config = model.config
    batch = encoder_outputs.last_hidden_state.shape[0]
    device = encoder_outputs.last_hidden_state.device
    prefixes = _Prefixes(options.decoder_prefixes, batch)
    steps = prefixes.longest + options.max_new_tokens
    decoder = _Decoder(model, encoder_outputs, code_masks, batch=batch, max_len=steps)
    constraints = _Constraints(options, config, model.lm_head.out_features, device)
    start = torch.tensor(prefixes.lengths, device=device)  # the step at which each row begins to generate
    tokens = torch.full((batch, 1), config.decoder_start_token_id, device=device)
    out = torch.full((batch, options.max_new_tokens), config.pad_token_id, device=device)
    scores = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    written = torch.zeros(batch, dtype=torch.long, device=device)
    rows: list[list[int]] = [[] for _ in range(batch)]
    track = options.trie is not None or options.no_repeat_ngram_size > 0
    grouped = (
        None if options.grouped_tokens is None else torch.as_tensor(options.grouped_tokens, device=device)
    )
    for step in range(steps):
        generated = step - start  # (B,) tokens generated so far; negative while reading the prefix
        mask = constraints(step if not prefixes.longest else generated.clamp(min=0).tolist(), rows)
        logprobs = prefixes.force(step, decoder.step(tokens) + mask)  # (B, V)
        best, next_tokens = _greedy_choice(logprobs, grouped)
        writing = generated.ge(0) & ~done
        next_tokens = next_tokens.masked_fill(done, config.pad_token_id)
        scores += best.masked_fill(~writing, 0.0)
        index = writing.nonzero().squeeze(1)
        out[index, generated[index]] = next_tokens[index]
        written += writing.long()
        done |= writing & (next_tokens.eq(config.eos_token_id) | (generated + 1).ge(options.max_new_tokens))
        if track:
            for i in index.tolist():
                rows[i].append(int(next_tokens[i]))
        if bool(done.all()):
            break
        tokens = next_tokens[:, None]
    return GenerationOutput(sequences=out[:, : max(1, int(written.max()))], scores=scores)


def _beam_search(model, encoder_outputs, code_masks, options: DecodeSpec) -> GenerationOutput:
    config = model.config
    beams = options.num_beams
    batch = encoder_outputs.last_hidden_state.shape[0]
    device = encoder_outputs.last_hidden_state.device
    rows_n = batch * beams
    prefixes = _Prefixes(options.decoder_prefixes, batch)
    start = prefixes.lengths  # per sample: the step at which its beams begin to generate
    steps = prefixes.longest + options.max_new_tokens
    expanded = _expand_encoder_outputs(encoder_outputs, beams)
    beam_code_masks = code_masks.repeat_interleave(beams) if code_masks is not None else None
    decoder = _Decoder(model, expanded, beam_code_masks, batch=rows_n, max_len=steps)
    constraints = _Constraints(options, config, model.lm_head.out_features, device)
    vocab = model.lm_head.out_features
    penalty = options.length_penalty

    beam_scores = torch.zeros(batch, beams, device=device)
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first one at step 0
    beam_scores = beam_scores.view(-1)
    tokens = torch.full((rows_n, 1), config.decoder_start_token_id, device=device)
    history: list[list[int]] = [[] for _ in range(rows_n)]  # generated tokens (prefixes excluded)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def keep_live_beams(b: int) -> None:
        """A sample out of steps: its live beams count as hypotheses."""
        if len(finished[b]) < beams:
            for row in range(b * beams, (b + 1) * beams):
                score = float(beam_scores[row])
                if score != float("-inf"):
                    finished[b].append((score / max(1, len(history[row])) ** penalty, history[row]))
            finished[b].sort(key=lambda h: -h[0])

    for step in range(steps):
        generated = [max(0, step - start[r // beams]) for r in range(rows_n)] if prefixes.longest else step
        logprobs = decoder.step(tokens) + constraints(generated, history)  # (N, V)
        logprobs = prefixes.force(step, logprobs, rows_per_sample=beams)
        candidates = (logprobs + beam_scores[:, None]).view(batch, beams * vocab)
        top_scores, top_ids = candidates.topk(2 * beams, dim=-1)  # (B, 2K)
        top_scores, top_ids = top_scores.tolist(), top_ids.tolist()
        next_rows, next_tokens, next_scores = [], [], []
        for b in range(batch):
            length = step + 1 - start[b]  # tokens generated once this step's token is added
            kept = 0
            for rank, (score, flat) in enumerate(zip(top_scores[b], top_ids[b])):
                parent, token = b * beams + flat // vocab, flat % vocab
                if done[b] or score == float("-inf"):
                    break
                if token == config.eos_token_id and length > 0:
                    if rank < beams:  # an eos outside the top K beams is not a better hypothesis
                        finished[b].append((score / length**penalty, [*history[parent], token]))
                    continue
                next_rows.append(parent)
                next_tokens.append(token)
                next_scores.append(score)
                kept += 1
                if kept == beams:
                    break
            while kept < beams:  # sample finished or out of candidates: pad with dead beams
                next_rows.append(b * beams)
                next_tokens.append(config.pad_token_id)
                next_scores.append(float("-inf"))
                kept += 1
            finished[b].sort(key=lambda h: -h[0])
            del finished[b][beams:]
            if not done[b] and len(finished[b]) == beams:
                best_alive = max(next_scores[-beams:])
                # transformers' default (early_stopping=False): stop when no live beam can beat the worst kept one
                done[b] = best_alive / length**penalty <= finished[b][-1][0]
        if all(done):
            break
        rows_t = torch.tensor(next_rows, device=device)
        decoder.cache.reorder(rows_t)
        beam_scores = torch.tensor(next_scores, device=device)
        tokens = torch.tensor(next_tokens, device=device)[:, None]
        history = [
            [*history[r], t] if step >= start[i // beams] else history[r]
            for i, (r, t) in enumerate(zip(next_rows, next_tokens))
        ]
        for b in range(batch):
            if not done[b] and step + 1 - start[b] >= options.max_new_tokens:
                keep_live_beams(b)
                done[b] = True
        if all(done):
            break

    for b in range(batch):
        if not done[b]:
            keep_live_beams(b)
    best = [finished[b][0] if finished[b] else (float("-inf"), []) for b in range(batch)]
    width = max(1, max(len(h[1]) for h in best))
    out = torch.full((batch, width), config.pad_token_id, device=device)
    for b, (_, seq) in enumerate(best):
        if seq:
            out[b, : len(seq)] = torch.tensor(seq, device=device)
    return GenerationOutput(sequences=out, scores=torch.tensor([h[0] for h in best], device=device))
