"""`biomedgpt quickstart -c configs/quickstart.yaml`: the whole model chain end to end, in seconds on a CPU.

Builds the configured model (tiny by default, random weights) with the committed biomedical tokenizer, runs it on
synthetic scans through every decoding mode (greedy captions restricted to text tokens, beam search, closed-set
VQA through the answer trie, a box restricted to `<bin>` tokens), saves the model folder (safetensors, config,
tokenizer, preprocessor), reloads it and checks the weights and outputs are identical. Prints what it did and a
JSON summary. The weights are untrained, so the words are arbitrary: this checks the plumbing, not quality.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from biomedgpt.commands._config_args import add_config_arguments, resolve_config

CAPTION_PROMPT = " what does the image describe?"
GROUNDING_PROMPT = ' which region does the text " {} " describe?'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--out", default=None, help="model folder to write (default: <train.output_dir>/model)"
    )
    parser.add_argument("--samples", type=int, default=4, help="synthetic scans to run (default 4)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from biomedgpt.ingest.synthetic import make_scan
    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.constraints import AnswerTrie
    from biomedgpt.model.decode_spec import DecodeSpec
    from biomedgpt.model.generation import generate
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration
    from biomedgpt.model.processing import BiomedGPTProcessor, load_pretrained
    from biomedgpt.tokenization.locations import bins_to_box, token_ids_to_bins
    from biomedgpt.tokenization.ranges import allowed_token_mask

    cfg = resolve_config(args)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    processor = BiomedGPTProcessor.default(image_size=cfg.model.image_size)
    layout = processor.tokenizer.layout
    config = BiomedGPTConfig.from_arch(
        cfg.model.arch, vocab_size=layout.vocab_size, image_size=cfg.model.image_size
    )
    model = BiomedGPTForConditionalGeneration(config).eval()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"[1/5] built '{cfg.model.arch}' model: {params / 1e6:.2f}M parameters, vocabulary {layout.vocab_size} "
        f"(text {layout.text_range}, <code> {layout.code_range}, <bin> {layout.bin_range})"
    )

    rng = np.random.default_rng(args.seed)
    scans = [make_scan(rng, image_size=cfg.model.image_size, min_lesions=1) for _ in range(args.samples)]
    images = [scan.image for scan in scans]
    print(
        f"[2/5] made {len(scans)} synthetic {cfg.model.image_size}px scans ({sum(len(s.lesions) for s in scans)} lesions)"
    )

    def decode_opts(kind: str, **extra) -> DecodeSpec:
        allowed = torch.from_numpy(allowed_token_mask(layout, kind))
        return DecodeSpec.from_config(cfg.generation, allowed_tokens=allowed, **extra)

    text_kind = {"none": "any"}.get(cfg.generation.constraint, cfg.generation.constraint)
    batch = processor(text=[CAPTION_PROMPT] * len(images), images=images)
    captions = processor.batch_decode(generate(model, **batch, options=decode_opts(text_kind)).sequences)
    beam_opts = replace(decode_opts(text_kind), num_beams=4)
    beam_captions = processor.batch_decode(generate(model, **batch, options=beam_opts).sequences)
    answers = ["yes", "no"]
    trie = AnswerTrie(
        [processor.tokenizer.encode_prompt(" " + a)[1:] for a in answers], eos_token_id=layout.eos_id
    )
    vqa = processor(text=[" is there a lesion?"] * len(images), images=images)
    vqa_out = processor.batch_decode(generate(model, **vqa, options=decode_opts("text", trie=trie)).sequences)
    grounding = processor(text=[GROUNDING_PROMPT.format("lesion")] * len(images), images=images)
    box_opts = replace(decode_opts("bins"), min_new_tokens=4, max_new_tokens=5)
    box_ids = generate(model, **grounding, options=box_opts).sequences
    size = cfg.model.image_size
    boxes = [
        bins_to_box(token_ids_to_bins(row[:4].tolist(), layout), width=size, height=size) for row in box_ids
    ]
    print("[3/5] generated (untrained weights: arbitrary words, but only the allowed kinds of token):")
    for i in range(len(images)):
        print(
            f"      scan {i}: caption {captions[i]!r} | beam {beam_captions[i]!r} | lesion? {vqa_out[i].strip()!r} "
            f"| box {[round(v, 1) for v in boxes[i]]}"
        )
    answers_in_list = all(a.strip() in answers for a in vqa_out)

    out_dir = Path(args.out or Path(cfg.train.output_dir) / "model")
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    print(f"[4/5] saved model folder {out_dir} ({', '.join(sorted(p.name for p in out_dir.iterdir()))})")

    reloaded, reloaded_processor = load_pretrained(out_dir)
    same_weights = all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values())
    )
    again = reloaded_processor.batch_decode(
        generate(reloaded, **batch, options=decode_opts(text_kind)).sequences
    )
    same_outputs = again == captions
    print(f"[5/5] reloaded: weights identical: {same_weights}; captions identical: {same_outputs}")
    summary = {
        "arch": cfg.model.arch,
        "params": params,
        "vocab_size": layout.vocab_size,
        "samples": len(images),
        "image_size": size,
        "model_dir": str(out_dir),
        "weights_identical": same_weights,
        "outputs_identical": same_outputs,
        "vqa_answers_in_list": answers_in_list,
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(summary))
    return 0 if same_weights and same_outputs and answers_in_list else 1
