"""Launch the Gradio demo for real on 127.0.0.1 in this process, for the demo tests (not a test module)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_demo(backend, examples_dir: Path) -> Iterator[str]:
    """The demo over `backend` with generated examples (the same on CI and here); yields its URL."""
    from biomedgpt.demo.app import build_demo
    from biomedgpt.demo.examples import generated_examples

    examples = generated_examples(examples_dir)
    demo = build_demo(backend, examples=examples, examples_source="generated images")
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
