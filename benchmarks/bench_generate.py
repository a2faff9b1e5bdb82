"""Generation speed: our decoding loop vs transformers' BartForConditionalGeneration.generate, same run.

Both models get the same dimensions (d_model, layers, heads, FFN, vocabulary) and the same encoder length
(our image patches + prompt tokens = BART's source tokens); both are forced to decode exactly N tokens.
Encoders run once outside the timed region (ours has a ResNet); per-step time = (time for N tokens - time for
1 token) / (N - 1), which also removes per-call set-up.
Prints ms per decoding step and the ratio peer/ours (> 1 means ours is faster). Weights are random:
speed does not depend on them.

    python benchmarks/bench_generate.py --arch small --batch 1 8
    python benchmarks/bench_generate.py --model models/random-ofa-base --batch 1 8   # a model folder (an import)
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from _common import bart_peer, per_step_ms


def build_models(arch: str, vocab_size: int, model_dir: str | None = None):
    """Ours (a named size with random weights, or the model folder `model_dir`) and the BART peer."""
    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    torch.manual_seed(0)
    if model_dir is not None:
        ours = BiomedGPTForConditionalGeneration.from_pretrained(model_dir, use_safetensors=True).eval()
        return ours, bart_peer(ours.config)
    ours_cfg = BiomedGPTConfig.from_arch(arch, vocab_size=vocab_size)
    ours = BiomedGPTForConditionalGeneration(ours_cfg).eval()
    peer = bart_peer(ours_cfg)
    return ours, peer


def measure(
    arch: str,
    batch: int,
    *,
    new_tokens: int,
    image_size: int,
    prompt_len: int,
    vocab_size: int,
    repeats: int,
    model_dir: str | None = None,
) -> dict[str, float]:
    from biomedgpt.model.decode_spec import DecodeSpec
    from biomedgpt.model.generation import decode

    ours, peer = build_models(arch, vocab_size, model_dir)
    vocab_size = ours.config.vocab_size
    prompt = torch.randint(10, vocab_size - 10, (batch, prompt_len))
    images = torch.randn(batch, 3, image_size, image_size)
    source_len = (image_size // 16) ** 2 + prompt_len
    source = torch.randint(10, vocab_size - 10, (batch, source_len))

    result = {}
    with torch.inference_mode():
        # Encoders run once, outside the timed region: we time decoding steps only.
        ours_encoded = ours.get_encoder()(prompt, patch_images=images)
        peer_encoded = peer.get_encoder()(input_ids=source)

        def ours_run(n: int):
            opts = DecodeSpec(max_new_tokens=n, min_new_tokens=n)
            return lambda: decode(ours, ours_encoded, options=opts)

        def peer_run(n: int):
            return lambda: peer.generate(
                encoder_outputs=peer_encoded,
                attention_mask=torch.ones_like(source),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                num_beams=1,
            )

        for name, run in (("ours", ours_run), ("hf_bart", peer_run)):
            result[f"{name}_ms_per_step"] = per_step_ms(run, new_tokens, repeats)
    result["ratio_peer_over_ours"] = result["hf_bart_ms_per_step"] / result["ours_ms_per_step"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="small")
    parser.add_argument(
        "--model",
        default=None,
        help="a model folder (e.g. from `biomedgpt import`); sets size, vocabulary, image",
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=10)
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from pathlib import Path

        config = json.loads((Path(args.model) / "config.json").read_text())
        args.arch, args.image_size, args.vocab_size = args.model, config["image_size"], config["vocab_size"]
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, arch {args.arch}, {args.new_tokens} new tokens, image {args.image_size}px, "
        f"prompt {args.prompt_len}, vocab {args.vocab_size}"
    )
    for batch in args.batch:
        row = measure(
            args.arch,
            batch,
            new_tokens=args.new_tokens,
            image_size=args.image_size,
            prompt_len=args.prompt_len,
            vocab_size=args.vocab_size,
            repeats=args.repeats,
            model_dir=args.model,
        )
        print(json.dumps({"batch": batch, **{k: round(v, 3) for k, v in row.items()}}))


if __name__ == "__main__":
    main()
