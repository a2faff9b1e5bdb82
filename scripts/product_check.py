"""The CI half of the README's main command (`scripts/demo.sh --ci`): drive the running API and demo with real
held-out samples and print a summary of what was measured. Exits 1 if any call failed.

- every served task through `POST /v1/tasks/{task}` with a test-split image of the demo corpus;
- a free instruction through `/v1/chat/completions` with the official `openai` client;
- the VQA tab of the Gradio demo through `gradio_client`;
- the figures behind them: the evaluation report, the export's parity check and int8 gate.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image


def png_bytes(image) -> bytes:
    from biomedgpt.model.image_processing import to_rgb_uint8

    buffer = io.BytesIO()
    to_rgb_uint8(image).save(buffer, format="PNG")
    return buffer.getvalue()


def post_task(api: str, key: str, task: str, body: dict) -> tuple[int, dict, float]:
    request = urllib.request.Request(
        f"{api}/v1/tasks/{task}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), (time.perf_counter() - started) * 1000
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), (time.perf_counter() - started) * 1000


def samples_per_task(shards: str, tasks: list[str]) -> dict:
    from biomedgpt.eval.runner import iter_samples, resolve_shards

    found: dict = {}
    for sample in iter_samples(resolve_shards([shards], split="test"), split="test", tasks=set(tasks)):
        if sample.image is not None and len(found.setdefault(sample.task, [])) < 4:
            found[sample.task].append(sample)
    return found


def task_body(sample) -> dict:
    """The `POST /v1/tasks/{task}` body for a held-out sample: its image, and the task's request field filled
    from the sample (`Task.request_value`) when the task has one."""
    from biomedgpt.tasks import get_task

    task = get_task(sample.task)
    body = {"image": base64.b64encode(png_bytes(sample.image)).decode(), "mask_format": "rle"}
    if task.request_field is not None:
        body[task.request_field] = task.request_value(sample)
    return body


def reference(sample) -> str:
    """The sample's reference (`Task.reference`) in words: a mask or boxes summarised, as the demo shows them."""
    from biomedgpt.demo.examples import reference_text

    return reference_text(sample)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--demo", required=True)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--export", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    key = os.environ.get("BIOMEDGPT_API_KEY", "")
    failures = 0

    with urllib.request.urlopen(f"{args.api}/ready", timeout=10) as response:
        ready = json.loads(response.read())
    print(f"\n== API ready: {ready}")
    from openai import OpenAI

    client = OpenAI(base_url=f"{args.api}/v1", api_key=key)
    models = [m.id for m in client.models.list().data]
    tasks = sorted({m.split(":", 1)[1] for m in models if ":" in m})
    print(f"models: {', '.join(models)}")

    print("\n== one request per held-out sample and task (POST /v1/tasks/{task})")
    latencies = []
    for task, samples in samples_per_task(args.shards, tasks).items():
        for sample in samples:
            status, payload, ms = post_task(args.api, key, task, task_body(sample))
            latencies.append(ms)
            shown = payload.get("output", payload.get("error"))
            if isinstance(shown, dict) and isinstance(shown.get("mask"), dict):
                shown = {**shown, "mask": {k: v for k, v in shown["mask"].items() if k != "rle"}}
            print(
                f"  {task:<15} {status} {ms:7.1f} ms  reference {reference(sample)[:40]!r:<44} -> {json.dumps(shown)[:100]}"
            )
            failures += status != 200

    image = next(iter(samples_per_task(args.shards, ["vqa"]).get("vqa", [])), None)
    if image is not None:
        url = "data:image/png;base64," + base64.b64encode(png_bytes(image.image)).decode()
        completion = client.chat.completions.create(
            model=f"{models[0].split(':')[0]}:vqa",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": image.fields["question"]},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            max_tokens=16,
        )
        print(
            f"\n== openai client, chat.completions: {image.fields['question']!r} -> {completion.choices[0].message.content!r}"
        )

        from gradio_client import Client, handle_file

        with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as handle:
            Image.open(io.BytesIO(png_bytes(image.image))).save(handle.name)
        demo = Client(args.demo, verbose=False)
        result = demo.predict(handle_file(handle.name), image.fields["question"], api_name="/vqa")
        print(f"== Gradio demo (gradio_client, /vqa): {result}")

    manifest = json.loads((Path(args.export) / "manifest.json").read_text())
    print("\n== export: parity against PyTorch")
    for case in manifest["parity"]["cases"]:
        print(
            f"  batch {case['batch']}, {case['image_size']} px: logits max abs diff {case['logits_max_abs_diff']:.2e}, greedy identical {case['greedy_identical']}"
        )
    if "int8" in manifest:
        print(
            f"  int8 gate: {'accepted' if manifest['int8']['accepted'] else 'rejected: ' + manifest['int8'].get('reason', '')}"
        )
    report = json.loads(Path(args.report).read_text())
    print("\n== evaluation on the held-out test split (PyTorch checkpoint; fixed prompts)")
    for task, result in report["tasks"].items():
        print(
            f"  {task:<15} {json.dumps(result.get('fixed', {}))[:110]}  baseline {json.dumps(result.get('baseline', {}))[:80]}"
        )
    if latencies:
        print(
            f"\nrequests: {len(latencies)}, failures {failures}, latency p50 {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
