"""`biomedgpt demo (--model DIR [--engine torch] | --api URL [--api-key KEY]) [--host H] [--port P]`.

Starts the Gradio multitask demo (biomedgpt/demo/app.py) over a model in this process (ONNX Runtime by
default) or over a running `biomedgpt serve`. It binds to 127.0.0.1 unless told otherwise, warns when it is not,
and offers no public share link: the demo has no authentication of its own.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

API_KEY_ENV = "BIOMEDGPT_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="a model or export folder, run in this process")
    source.add_argument("--api", metavar="URL", help="the address of a running `biomedgpt serve`")
    parser.add_argument(
        "--engine",
        choices=("onnxruntime", "torch"),
        default="onnxruntime",
        help="engine for --model (default onnxruntime)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="with --model: load it without checking its files against the sha256 in its manifest.json",
    )
    parser.add_argument("--api-key", help=f"the API's key for --api (default: ${API_KEY_ENV})")
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="wait this long for --api to be ready (default 30)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port to bind (default 7860)")
    parser.add_argument(
        "--examples-from",
        metavar="SHARDS",
        help="shards whose test split gives the examples (default data_shards/demo)",
    )
    parser.add_argument("--examples-per-task", type=int, default=3, help="examples per tab (default 3)")
    parser.add_argument(
        "--examples-dir", metavar="DIR", help="where example images are written (default: a temp folder)"
    )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the demo makes no calls home
    from biomedgpt.demo.backends import load_backend
    from biomedgpt.demo.examples import load_examples

    if args.api and args.engine != "onnxruntime":
        print("note: --engine applies to --model only; ignored with --api", file=sys.stderr)
    try:
        backend = load_backend(
            model=args.model,
            engine=args.engine,
            api=args.api,
            api_key=args.api_key or os.environ.get(API_KEY_ENV),
            wait_s=args.wait,
            verify=not args.no_verify,
        )
        examples, source = load_examples(
            args.examples_from, cache_dir=args.examples_dir, per_task=args.examples_per_task
        )
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(
            f"warning: binding to {args.host}: anyone who can reach this machine can use the demo, which has no login",
            file=sys.stderr,
        )
    # gradio: seconds to import, so only once the inputs are good
    from biomedgpt.demo.app import UploadLimits, build_demo

    limits = UploadLimits.from_config()
    demo = build_demo(backend, examples=examples, examples_source=source, limits=limits)
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=False,
            ssr_mode=False,
            quiet=True,
            prevent_thread_lock=True,
            max_file_size=limits.max_bytes,  # Gradio refuses larger uploads before writing them to disk
        )
    except OSError as err:
        print(f"error: cannot serve on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    # A wildcard address is not something a browser can open; this machine's loopback is.
    shown_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(
        args.host, f"[{args.host}]" if ":" in args.host else args.host
    )
    print(f"BiomedGPT demo: {backend.describe()}; examples from {source}")
    print(f"open http://{shown_host}:{args.port} (Ctrl+C stops it)", flush=True)
    demo.block_thread()  # until Ctrl+C, which gradio answers by closing the server
    return 0
