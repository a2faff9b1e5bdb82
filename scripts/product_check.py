"""The CI half of the README's main command (`scripts/demo.sh --ci`): drive the running API and demo with real
held-out samples, judge the answers, and print what was measured. Exits 1 if a call failed, a served figure
disagrees with the evaluation report, or a served task does not clear its trivial baseline by more than one
sample's worth (the lower of its served and evaluated figures).

- every served task through `POST /v1/tasks/{task}`, with the samples `biomedgpt eval` scored: the first N test
  samples of the task in shard order (`eval.runner.held_out_samples`; N is the report's sample count, which is
  `eval.max_samples` and the int8 gate's `--gate-max-samples`), scored with the task's own `reference`,
  `prediction` and `score`;
- each task's headline metric, served (ONNX Runtime, int8 when the gate kept it) next to the report's figure for
  the same samples (PyTorch, fp32) and the report's trivial baseline; a table and a few answers per task;
- a free instruction through `/v1/chat/completions` with the official `openai` client;
- the VQA tab of the Gradio demo through `gradio_client`;
- the export's parity check and int8 gate.

Agreement with the report: the server answers with the exported graphs, which the export checked against
PyTorch (greedy outputs identical), int8 where the gate kept it. The gate scored the same samples with the fp32
and the int8 graphs and kept int8 only if no metric dropped by more than `max_drop_allowed` (0.01). So the
served figure may differ from the report's by the int8 change the gate measured on that task (at least its
0.01 allowance), plus one sample's worth (1/N): the server batches requests as they arrive, and padding a row
beside other rows can flip a near-tied greedy choice in one answer.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

HEADLINE = {
    "vqa": "accuracy",
    "classification": "accuracy",
    "caption": "rouge_l",
    "report": "findings_micro_f1",
    "segmentation": "dice_foreground",
    "grounding": "acc@0.5",
    "detection": "map@0.5",
}
"""The figure each served task is judged on (the issue's: accuracy against the majority answer, caption ROUGE-L,
findings F1, Dice over the samples with a target, accuracy at IoU 0.5); other tasks: their first metric."""
SHOWN_ANSWERS = 3
CONCURRENT_REQUESTS = 8


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
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read()), (time.perf_counter() - started) * 1000
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), (time.perf_counter() - started) * 1000


def task_body(sample) -> dict:
    """The `POST /v1/tasks/{task}` body for a held-out sample: its image (lossless PNG of the pixels eval reads),
    masks as RLE, and the task's request field filled from the sample (`Task.request_value`) when it has one."""
    from biomedgpt.tasks import get_task

    task = get_task(sample.task)
    body = {"image": base64.b64encode(png_bytes(sample.image)).decode(), "mask_format": "rle"}
    if task.request_field is not None:
        body[task.request_field] = task.request_value(sample)
    return body


def decoded_output(task, output: dict[str, Any]) -> dict[str, Any]:
    """The API's JSON output as the engine produced it: an RLE mask back to a bool array."""
    from biomedgpt.eval.rle import rle_to_mask

    if task.output_kind == "mask" and isinstance(output.get("mask"), dict):
        return {**output, "mask": rle_to_mask(output["mask"]["rle"])}
    return output


def headline(task) -> str:
    return HEADLINE.get(task.name) or (task.metrics[0] if task.metrics else "")


def best_baseline(entry: dict[str, Any], metric: str) -> tuple[str, float | None]:
    """(name, figure) of the report's best trivial baseline on `metric`: closed-set tasks
    `{"majority_answer": answer, <scores>}` (VQA adds `per_question_majority`), others `{<baseline name>: <scores>}`."""
    baseline = entry.get("baseline") or {}
    named = [
        (name, float(scores[metric]))
        for name, scores in baseline.items()
        if isinstance(scores, dict) and isinstance(scores.get(metric), (int, float))
    ]
    if isinstance(baseline.get(metric), (int, float)):
        named.append((f"majority {baseline.get('majority_answer')!r}", float(baseline[metric])))
    return max(named, key=lambda item: item[1]) if named else ("-", None)


def tolerance(manifest: dict[str, Any], precision: str, task: str, metric: str, n: int) -> float:
    """How far the served figure may be from the report's (module docstring): the int8 change the gate measured
    on these samples (at least its allowance) when int8 is served, plus one sample's worth."""
    gate = manifest.get("int8") or {}
    allowed = 0.0
    if precision == "int8" and gate.get("accepted"):
        fp32 = (gate.get("fp32") or {}).get(task, {}).get(metric)
        int8 = (gate.get("int8") or {}).get(task, {}).get(metric)
        measured = abs(int8 - fp32) if isinstance(fp32, float) and isinstance(int8, float) else 0.0
        allowed = max(float(gate.get("max_drop_allowed", 0.01)), measured)
    return allowed + 1.0 / max(n, 1)


def shown(task, output: dict[str, Any]) -> str:
    """An answer in words, as the references are shown (`demo.examples.reference_text`): a mask or boxes
    summarised, text as is."""
    if task.output_kind == "mask":
        mask = output.get("mask") or {}
        return f"mask of {mask.get('area', 0)} px"
    if task.output_kind == "objects":
        return f"{len(output.get('objects') or [])} objects"
    if task.output_kind == "box":
        box = output.get("box")
        return "no box" if box is None else "box " + ", ".join(f"{v:g}" for v in box)
    text = str(output.get(task.output_kind) or output.get("text", ""))
    return text if len(text) <= 60 else text[:57] + "..."


def check_tasks(args, key: str, tasks: list[str], report: dict, manifest: dict) -> tuple[int, list[float]]:
    """Every served task on the report's samples through the API; prints the table and answers; returns
    (failures, latencies)."""
    from biomedgpt.demo.examples import reference_text
    from biomedgpt.eval.runner import held_out_samples, resolve_shards
    from biomedgpt.tasks import get_task

    failures, latencies, rows, answers = 0, [], [], []
    shards = resolve_shards([args.shards], split=report.get("split", "test"))
    for name in tasks:
        task, entry = get_task(name), report["tasks"].get(name)
        if entry is None:
            print(f"  {name}: served but not in the evaluation report: FAIL")
            failures += 1
            continue
        n = int(entry["samples"])
        samples = held_out_samples(shards, split=report.get("split", "test"), tasks={name}, max_samples=n)
        samples = samples.get(name, [])
        with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
            bodies = [task_body(s) for s in samples]
            results = list(pool.map(lambda body, task=name: post_task(args.api, key, task, body), bodies))
        errors = [(s, r) for s, r in zip(samples, results) if r[0] != 200]
        latencies += [ms for _, _, ms in results]
        if errors or len(samples) != n:
            sample, (status, payload, _) = errors[0] if errors else (None, (0, {}, 0))
            why = f"{len(errors)} of {len(samples)} requests failed (first: {status} {payload.get('error')})"
            print(
                f"  {name}: {why if errors else f'{len(samples)} test samples, the report scored {n}'}: FAIL"
            )
            failures += 1
            continue
        outputs = [decoded_output(task, payload["output"]) for _, payload, _ in results]
        refs, opts = (list(column) for column in zip(*(task.reference(s) for s in samples)))
        served = task.score([task.prediction(o) for o in outputs], refs, opts)
        metric = headline(task)
        value, reported = served.get(metric), (entry.get("fixed") or {}).get(metric)
        paraphrased = (entry.get("eval") or {}).get(metric)
        base_name, base = best_baseline(entry, metric)
        tol = tolerance(manifest, args.precision, name, metric, n)
        verdicts = []
        if not isinstance(value, float) or math.isnan(value):
            verdicts.append("no figure")
        else:
            if reported is None or abs(value - reported) > tol + 1e-9:
                verdicts.append(f"differs from eval by more than {tol:.3f}")
            # The lower of the served and the evaluated figure must clear the baseline by more than one sample's
            # worth (1/n): int8 noise or a single answer must not lift a task over its bar.
            margin = 1.0 / max(n, 1)
            if base is not None and min(value, reported if reported is not None else value) <= base + margin:
                verdicts.append(f"not above its baseline by more than one sample ({margin:.3f})")
            elif base is None and value <= 0.0:
                verdicts.append("scores 0 (and has no baseline to beat)")
        failures += bool(verdicts)
        rows.append((name, n, metric, value, reported, tol, paraphrased, base, base_name, verdicts))
        for sample, (_, payload, _) in list(zip(samples, results))[:SHOWN_ANSWERS]:
            answers.append((name, sample, payload["output"]))

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.3f}"

    print(
        f"\n== served answers ({args.precision} graphs) judged on the samples eval scored (test split, PyTorch fp32;"
        " the prompts the model records)"
    )
    header = f"  {'task':<15}{'n':>4}  {'metric':<18}{'served':>8}{'eval':>8}{'+/-':>7}{'paraphr.':>10}{'baseline':>10}  verdict"
    print(header)
    for name, n, metric, value, reported, tol, paraphrased, base, base_name, verdicts in rows:
        verdict = "FAIL: " + "; ".join(verdicts) if verdicts else f"ok (baseline: {base_name})"
        if not verdicts and base is None:
            verdict = "ok (no baseline)"
        print(
            f"  {name:<15}{n:>4}  {metric:<18}{fmt(value):>8}{fmt(reported):>8}{tol:>7.3f}{fmt(paraphrased):>10}{fmt(base):>10}  {verdict}"
        )
    print(
        "  (served: the API's answers; eval: the report's figure on the same samples; +/-: the difference allowed;"
        " paraphr.: the report's figure with held-out paraphrases; baseline: the report's best trivial baseline)"
    )
    print(f"\n== a few answers per task (first {SHOWN_ANSWERS} samples): reference -> served")
    for name, sample, output in answers:
        request = get_task(name).request_value(sample)
        asked = f" [{request}]" if request else ""
        print(
            f"  {name:<15}{asked[:40]:<42} {reference_text(sample)[:50]!r:<54} -> {shown(get_task(name), output)!r}"
        )
    return failures, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--demo", required=True)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--export", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="the graphs the API serves (serve precision=)",
    )
    args = parser.parse_args()
    key = os.environ.get("BIOMEDGPT_API_KEY", "")
    started = time.perf_counter()

    with urllib.request.urlopen(f"{args.api}/ready", timeout=10) as response:
        ready = json.loads(response.read())
    print(f"\n== API ready: {ready}")
    from openai import OpenAI

    client = OpenAI(base_url=f"{args.api}/v1", api_key=key)
    models = [m.id for m in client.models.list().data]
    tasks = sorted({m.split(":", 1)[1] for m in models if ":" in m})
    print(f"models: {', '.join(models)}")
    report = json.loads(Path(args.report).read_text())
    manifest = json.loads((Path(args.export) / "manifest.json").read_text())
    failures, latencies = check_tasks(args, key, tasks, report, manifest)

    from biomedgpt.eval.runner import held_out_samples, resolve_shards

    vqa = held_out_samples(
        resolve_shards([args.shards], split="test"), split="test", tasks={"vqa"}, max_samples=1
    )
    image = next(iter(vqa.get("vqa", [])), None)
    if image is not None and "vqa" in tasks:
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
            f" (reference {image.fields['answer']!r})"
        )

        from gradio_client import Client, handle_file

        with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as handle:
            Image.open(io.BytesIO(png_bytes(image.image))).save(handle.name)
        demo = Client(args.demo, verbose=False)
        result = demo.predict(handle_file(handle.name), image.fields["question"], api_name="/vqa")
        print(f"== Gradio demo (gradio_client, /vqa): {result}")

    print("\n== export: parity against PyTorch")
    for case in manifest["parity"]["cases"]:
        print(
            f"  batch {case['batch']}, {case['image_size']} px: logits max abs diff {case['logits_max_abs_diff']:.2e}, greedy identical {case['greedy_identical']}"
        )
    if "int8" in manifest:
        gate = manifest["int8"]
        print(f"  int8 gate: {'accepted' if gate['accepted'] else 'rejected: ' + gate.get('reason', '')}")
    if latencies:
        print(
            f"\nrequests: {len(latencies)}, latency p50 {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
            f" ({CONCURRENT_REQUESTS} at a time); product check {time.perf_counter() - started:.0f} s"
        )
    print(f"product check: {'FAILED (' + str(failures) + ' task(s))' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
