"""The BiomedGPT model: caching, padding, position memo, save/load, sizes and OFA's parameter layout."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from biomedgpt.model.cache import StaticKVCache
from biomedgpt.model.configuration import BiomedGPTConfig
from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration
from tests.conftest import lively_model
from tests.numerics import assert_close_to_scale


def _inputs(batch: int = 3, *, vocab: int = 300, image_size: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, 7), generator=g)
    ids[1, 5:] = 1  # padded prompt
    ids[:, 0] = 0
    images = torch.randn(batch, 3, image_size, image_size, generator=g)
    decoder_ids = torch.randint(4, vocab, (batch, 9), generator=g)
    decoder_ids[:, 0] = 0
    return ids, images, decoder_ids


def _incremental_logits(model, ids, images, decoder_ids, cache, code_masks=None):
    encoded = model.get_encoder()(ids, attention_mask=ids.ne(1), patch_images=images)
    steps = []
    for t in range(decoder_ids.shape[1]):
        out = model(
            encoder_outputs=encoded,
            decoder_input_ids=decoder_ids[:, t : t + 1],
            past_key_values=cache,
            use_cache=True,
            code_masks=code_masks,
        )
        steps.append(out.logits)
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("arch", ["tiny", "small", "medium", "base"])
def test_incremental_decoding_matches_full_recomputation(arch):
    # The usual init scale (logits of order 1), so that 1e-5 is a tight bound rather than fp32 round-off.
    model = lively_model(arch, vocab_size=300, init_std=0.02)
    ids, images, decoder_ids = _inputs()
    with torch.no_grad():
        full = model(ids, attention_mask=ids.ne(1), patch_images=images, decoder_input_ids=decoder_ids).logits
        with_hf_cache = _incremental_logits(
            model, ids, images, decoder_ids, EncoderDecoderCache(DynamicCache(), DynamicCache())
        )
        cfg = model.config
        static = StaticKVCache(
            num_layers=cfg.decoder_layers,
            batch=3,
            num_heads=cfg.decoder_attention_heads,
            head_dim=cfg.d_model // cfg.decoder_attention_heads,
            max_len=16,
            dtype=torch.float32,
            device=torch.device("cpu"),
        )
        with_static = _incremental_logits(model, ids, images, decoder_ids, static)
    assert full.abs().max() > 0.1  # the comparison is not between near-zero tensors
    torch.testing.assert_close(with_hf_cache, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_static, full, atol=1e-5, rtol=0)


def test_incremental_decoding_of_image_codes_matches_full(tiny_model):
    """Samples whose target is image codes use image positions and their own embedding LayerNorm."""
    ids, images, decoder_ids = _inputs()
    code_masks = torch.tensor([True, False, True])
    with torch.no_grad():
        full = tiny_model(
            ids,
            attention_mask=ids.ne(1),
            patch_images=images,
            decoder_input_ids=decoder_ids,
            code_masks=code_masks,
        ).logits
        text_only = tiny_model(
            ids, attention_mask=ids.ne(1), patch_images=images, decoder_input_ids=decoder_ids
        ).logits
        inc = _incremental_logits(
            tiny_model,
            ids,
            images,
            decoder_ids,
            EncoderDecoderCache(DynamicCache(), DynamicCache()),
            code_masks=code_masks,
        )
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=1e-5)
    # Text sample unaffected. The two runs batch different kernels (mixed vs text-only position tables), so
    # fp32 rounding differs by CPU; the tolerance is relative to the logits' scale, never bit-equality.
    scale = float(text_only[1].abs().max())
    torch.testing.assert_close(full[1], text_only[1], atol=1e-5 * scale, rtol=1e-5)
    assert (full[0] - text_only[0]).abs().max() > 1e-3  # code sample really takes the image-position path


def test_padded_batch_equals_each_sample_alone(tiny_model):
    ids, images, decoder_ids = _inputs()
    patch_masks = torch.tensor([True, True, False])  # third sample: text only
    with torch.no_grad():
        batched = tiny_model(
            ids,
            attention_mask=ids.ne(1),
            patch_images=images,
            patch_masks=patch_masks,
            decoder_input_ids=decoder_ids,
        ).logits
        for i in range(3):
            length = int(ids[i].ne(1).sum())
            alone = tiny_model(
                ids[i : i + 1, :length],
                patch_images=images[i : i + 1] if patch_masks[i] else None,
                decoder_input_ids=decoder_ids[i : i + 1],
            ).logits
            # Padded batch vs one row: other kernel shapes, so fp32 rounding differs (by CPU); the bound is
            # relative to the logits' scale (measured: about 1e-6 of it), never bit-equality.
            assert_close_to_scale(batched[i : i + 1], alone, rel=1e-5, what=f"sample {i}")


def test_image_changes_the_output(tiny_model):
    ids, images, decoder_ids = _inputs()
    with torch.no_grad():
        a = tiny_model(ids, patch_images=images, decoder_input_ids=decoder_ids).logits
        b = tiny_model(ids, patch_images=images.flip(-1), decoder_input_ids=decoder_ids).logits
    assert (a - b).abs().max() > 1e-3


def test_training_and_inference_paths_agree():
    """Grad mode recomputes position tables; no-grad mode memoizes them. Both must give the same logits."""
    model = lively_model("tiny")
    ids, images, decoder_ids = _inputs()
    train_logits = model(
        ids, attention_mask=ids.ne(1), patch_images=images, decoder_input_ids=decoder_ids
    ).logits
    with torch.no_grad():
        eval_logits = model(
            ids, attention_mask=ids.ne(1), patch_images=images, decoder_input_ids=decoder_ids
        ).logits
    torch.testing.assert_close(train_logits.detach(), eval_logits, atol=1e-5, rtol=1e-5)


def test_position_memo_follows_weight_updates():
    """Regression: memoized position tables must be rebuilt after an in-place weight update."""
    model = lively_model("tiny")
    ids, images, decoder_ids = _inputs()
    with torch.no_grad():
        before = model(ids, patch_images=images, decoder_input_ids=decoder_ids).logits
        model.model.decoder.self_pos_k_linear.weight.mul_(3.0)
        memo_after = model(ids, patch_images=images, decoder_input_ids=decoder_ids).logits
    fresh = model(
        ids, patch_images=images, decoder_input_ids=decoder_ids
    ).logits.detach()  # grad mode: no memo
    assert (before - memo_after).abs().max() > 1e-4
    torch.testing.assert_close(memo_after, fresh, atol=1e-5, rtol=1e-5)


def test_loss_backward_and_gradient_checkpointing_agree():
    ids, images, decoder_ids = _inputs()
    labels = decoder_ids.roll(-1, dims=1)
    labels[:, -1] = 2
    labels[0, -2:] = -100
    grads = []
    for checkpointing in (False, True):
        model = lively_model("tiny", dropout=0.0)
        model.train()
        for m in model.modules():  # keep BatchNorm statistics fixed so both runs see the same function
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        if checkpointing:
            model.activation_checkpointing_enable()
        out = model(ids, attention_mask=ids.ne(1), patch_images=images, labels=labels)
        out.loss.backward()
        grads.append(
            (
                out.loss.detach(),
                model.model.shared.weight.grad.clone(),
                model.model.encoder.layers[0].self_attn.c_attn.grad.clone(),
            )
        )
    assert torch.isfinite(grads[0][0])
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_shared_embeddings_are_one_tensor(tiny_model):
    m = tiny_model
    assert m.lm_head.weight is m.model.shared.weight
    assert m.model.encoder.embed_tokens.weight is m.model.shared.weight
    assert m.model.decoder.embed_tokens.weight is m.model.shared.weight


def test_save_and_load_round_trip_is_bit_exact(tmp_path, tiny_model):
    from transformers import AutoModelForSeq2SeqLM

    from biomedgpt.model.decode_spec import DecodeSpec
    from biomedgpt.model.generation import generate

    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")), "weights must be saved as safetensors only"
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is BiomedGPTForConditionalGeneration
    original, reloaded = tiny_model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for name in original:
        assert torch.equal(original[name], reloaded[name]), name
    ids, images, _ = _inputs()
    opts = DecodeSpec(max_new_tokens=8)
    a = generate(tiny_model, input_ids=ids, attention_mask=ids.ne(1), patch_images=images, options=opts)
    b = generate(loaded, input_ids=ids, attention_mask=ids.ne(1), patch_images=images, options=opts)
    assert torch.equal(a.sequences, b.sequences)


def test_parameter_names_follow_ofa():
    """Module names mirror OFA's so official checkpoints convert by renaming a prefix."""
    names = {n for n, _ in lively_model("tiny").named_parameters()}
    expected = [
        "model.encoder.embed_images.layer3.0.conv2.weight",
        "model.encoder.image_proj.weight",
        "model.encoder.patch_layernorm_embedding.weight",
        "model.encoder.type_embedding.weight",
        "model.encoder.embed_image_positions.weight",
        "model.encoder.pos_q_linear.weight",
        "model.encoder.layers.0.self_attn.c_attn",
        "model.encoder.layers.0.attn_ln.weight",
        "model.encoder.layers.0.ffn.ffn_layernorm.weight",
        "model.encoder.token_rel_pos_table_list.0.weight",
        "model.encoder.image_rel_pos_table_list.1.weight",
        "model.decoder.code_layernorm_embedding.weight",
        "model.decoder.cross_pos_k_linear.weight",
        "model.decoder.layers.1.encoder_attn.c_attn",
        "model.decoder.layers.1.cross_attn_ln.bias",
        "model.decoder.layers.1.self_attn_ln.bias",
    ]
    missing = [n for n in expected if n not in names]
    assert not missing, missing


@pytest.mark.parametrize(("arch", "published"), [("small", 33e6), ("medium", 93e6), ("base", 182e6)])
def test_sizes_match_biomedgpt_with_ofa_vocabulary(arch, published):
    with torch.device("meta"):
        model = BiomedGPTForConditionalGeneration(BiomedGPTConfig.from_arch(arch, vocab_size=59457))
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / published - 1) < 0.05, params


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="did you mean 'base'"):
        BiomedGPTConfig.from_arch("bsae")
    with pytest.raises(ValueError, match="not divisible"):
        BiomedGPTConfig.from_arch("tiny", encoder_attention_heads=5)
    with pytest.raises(ValueError, match="multiple of 16"):
        BiomedGPTConfig.from_arch("tiny", image_size=100)


def test_decoder_length_limit_is_a_clear_error(tiny_model):
    ids, images, _ = _inputs()
    too_long = torch.zeros(3, tiny_model.config.max_target_positions + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="max_target_positions"), torch.no_grad():
        tiny_model(ids, patch_images=images, decoder_input_ids=too_long)
