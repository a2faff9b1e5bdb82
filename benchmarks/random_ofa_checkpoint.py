"""Write a fairseq OFA/BiomedGPT checkpoint with random weights at one of OFA's sizes, for speed measurements.

Speed does not depend on the weights, and no registry ships the official ones, so the benchmarks of an imported
model (OFA's 59,457-id vocabulary, BiomedGPT's options) start from this file:

    python benchmarks/random_ofa_checkpoint.py --arch ofa_base --out /tmp/ofa_base.pt
    biomedgpt import /tmp/ofa_base.pt --out models/random-ofa-base --bpe-dir OFA/utils/BPE --task caption
    python benchmarks/bench_generate.py --model models/random-ofa-base --batch 1 8
    python benchmarks/bench_serve.py --model models/random-ofa-base --skip-load

The checkpoint is laid out as fairseq's trainer saves it (args Namespace with BiomedGPT's options, the state
dict under OFA's key names), so the import runs its full set of checks on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OFA_VOCAB = 59_457  # 4 specials + 50,260 dictionary lines + <mask> + 8,192 codes + 1,000 bins
SIZES = {"ofa_tiny": "small", "ofa_medium": "medium", "ofa_base": "base"}
PATCH_SIZE = {"ofa_tiny": 256, "ofa_medium": 256, "ofa_base": 384}
BIOMEDGPT_FLAGS = dict(
    encoder_normalize_before=True,
    decoder_normalize_before=True,
    share_all_embeddings=True,
    layernorm_embedding=True,
    patch_layernorm_embedding=True,
    code_layernorm_embedding=True,
    add_type_embedding=True,
    scale_attn=True,
    scale_fc=True,
    scale_heads=True,
    disable_entangle=True,
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=sorted(SIZES), default="ofa_base")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.convert.ofa_keys import to_ofa_state_dict
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    torch.manual_seed(args.seed)
    config = BiomedGPTConfig.from_arch(
        SIZES[args.arch], vocab_size=OFA_VOCAB, image_size=PATCH_SIZE[args.arch]
    )
    model = BiomedGPTForConditionalGeneration(config).eval()
    namespace = argparse.Namespace(
        arch=args.arch, task="caption", patch_image_size=config.image_size, **BIOMEDGPT_FLAGS
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"args": namespace, "cfg": None, "model": to_ofa_state_dict(model), "extra_state": {}}, args.out
    )
    print(
        f"wrote {args.out}: {args.arch}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
