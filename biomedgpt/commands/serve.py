"""`biomedgpt serve --model DIR [--engine onnxruntime|torch] [--host H] [--port P] [-c FILE] [KEY=VALUE ...]`.

Starts the HTTP API (biomedgpt/serve/app.py) under uvicorn. Settings come from `ServeConfig`: defaults <
`-c` YAML < BIOMEDGPT_SERVE_* environment < KEY=VALUE overrides < flags. The API key is best given as
BIOMEDGPT_API_KEY (a flag shows up in `ps`). A non-loopback host without a key is refused unless
`--allow-no-key`; either way a server without a key says so at start. Before it starts, every model file the
engine will read is checked against the sha256 in the folder's manifest.json (`--no-verify` skips it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from biomedgpt.commands._config_args import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.epilog = (
        "KEY=VALUE overrides name ServeConfig keys (e.g. max_batch_size=16 max_wait_ms=10); each key can also be "
        "set as BIOMEDGPT_SERVE_<KEY>. See configs/serve/default.yaml."
    )
    parser.add_argument(
        "--model", default=None, help="model folder: an export (onnxruntime) or a checkpoint (torch)"
    )
    parser.add_argument(
        "--engine", choices=("onnxruntime", "torch"), default=None, help="default onnxruntime"
    )
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to bind (default 8000)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="require this key on /v1 routes (prefer the BIOMEDGPT_API_KEY variable)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify_files",
        action="store_const",
        const=False,
        default=None,
        help="load the model without checking its files against the sha256 in its manifest.json",
    )
    parser.add_argument(
        "--allow-no-key",
        action="store_const",
        const=True,
        default=None,
        help="bind a non-loopback host without an API key (e.g. behind an authenticating proxy)",
    )


def run(args: argparse.Namespace) -> int:
    import yaml

    from biomedgpt.config import ConfigError
    from biomedgpt.serve.config import load_serve_config

    flags = {
        "model": args.model,
        "engine": args.engine,
        "host": args.host,
        "port": args.port,
        "api_key": args.api_key,
        "allow_no_key": args.allow_no_key,
        "verify_files": args.verify_files,
    }
    try:
        config = load_serve_config(args.config, args.overrides, flags=flags)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dump_config:
        sys.stdout.write(yaml.safe_dump(config.redacted(), sort_keys=False))  # the key stays hidden
        return 0
    if config.model is None:
        print("error: no model: pass --model DIR (or set BIOMEDGPT_SERVE_MODEL)", file=sys.stderr)
        return 2
    if not config.model.is_dir():
        print(f"error: the model folder {config.model} does not exist", file=sys.stderr)
        return 2
    if config.api_key is None:
        if not config.is_loopback and not config.allow_no_key:
            print(
                f"error: refusing to serve on {config.host} without an API key: set BIOMEDGPT_API_KEY "
                "(or --api-key), or pass --allow-no-key if something in front of the server authenticates",
                file=sys.stderr,
            )
            return 2
        print("warning: no API key: every client that reaches this port can use the API", file=sys.stderr)

    from biomedgpt.errors import ModelFileError
    from biomedgpt.serve.app import create_app_from_config
    from biomedgpt.serve.engines import verify_model_folder
    from biomedgpt.serve.server import run_server

    if config.verify_files:
        # Before the server starts, so a changed or missing file refuses to serve with one line. Each file is
        # hashed once: the engine, loaded in the background, does not check them again.
        try:
            checked = verify_model_folder(config.model, engine=config.engine, precision=config.precision)
        except (ModelFileError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if checked:
            print(f"checked {len(checked)} model files against manifest.json", file=sys.stderr)
        else:
            print(
                f"note: {config.model} has no manifest.json with file hashes: nothing to check",
                file=sys.stderr,
            )
        config = dataclasses.replace(config, verify_files=False)
    else:
        print("warning: --no-verify: the model files are not checked against manifest.json", file=sys.stderr)
    app = create_app_from_config(config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"biomedgpt serve: {config.engine} engine on {config.model}", file=sys.stderr)
    print(f"serving on http://{host}:{config.port} (OpenAI base_url http://{host}:{config.port}/v1)")
    sys.stdout.flush()
    run_server(app, config)
    return 0
