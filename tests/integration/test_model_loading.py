"""Loading models for serving and training: files checked against their manifest, the tasks a folder was trained
on, and one-line errors for folders and trainer states that cannot be used.

- An export whose graph, answers or manifest changed is refused by the engine, by `biomedgpt serve` (one line,
  exit 2, in a process without torch) and by `biomedgpt demo`; `--no-verify` loads it anyway.
- A trainer checkpoint records the tasks it was trained on and their prompts (serving.json), the closed-set answers
  (answers.json) and baselines (baselines.json) of its TRAIN split, all in its manifest; a resumed run and
  `biomedgpt export` copy them without reading any shard. `biomedgpt serve --engine torch` on the run folder offers
  exactly the trained tasks, and an untrained task's endpoint answers 404 saying so. Its weights are checked
  against its manifest too.
- `finetune model.init_from=<folder without weights>` and a resume from a trainer state that the weights-only
  loader refuses (or that changed since it was written) print one line and exit 2, without running anything.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from biomedgpt import cli
from biomedgpt.errors import ModelFileError
from biomedgpt.hashing import sha256_file
from tests.integration._demo_server import free_port
from tests.integration._serve_api import png_bytes, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
    "from biomedgpt.cli import main; sys.exit(main(sys.argv[1:]))\n"
)
CLI = "from biomedgpt.cli import main; import sys; sys.exit(main(sys.argv[1:]))\n"
STEP = "step-00000002"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    argv = ["shard", "--synthetic", "40", "--out", str(out), "--image-size", "64", "--no-progress"]
    assert cli.main(argv) == 0
    return out


def train_args(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "-c",
        str(QUICKSTART),
        f"data.shards=[{shards}]",
        f"train.output_dir={run_dir}",
        "train.max_steps=2",
        "train.val_every=0",
        "train.ckpt_every=0",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained_run(shards, tmp_path_factory) -> Path:
    """A real two-step fine-tuning run on VQA and classification only."""
    run = tmp_path_factory.mktemp("runs") / "vqa-classification"
    assert cli.main(["finetune", *train_args(shards, run, "data.mixture={vqa: 1, classification: 1}")]) == 0
    return run


def run_cli(*argv: str, timeout: float = 300, no_torch: bool = False) -> subprocess.CompletedProcess:
    code = NO_TORCH if no_torch else CLI
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


def tamper_graph(path: Path) -> None:
    """Scale one weight of an ONNX graph: still a valid graph, no longer the exported one."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 1:
            init.CopyFrom(numpy_helper.from_array(array * 1.5, init.name))
            break
    onnx.save(proto, str(path))


@pytest.fixture
def tampered_export(exported_model_dir, tmp_path) -> Path:
    copy = tmp_path / "model-onnx"
    shutil.copytree(exported_model_dir, copy)
    tamper_graph(copy / "decoder.onnx")
    return copy


# --- exports ----------------------------------------------------------------------------------------------


def test_the_engine_refuses_an_export_whose_graph_changed(tampered_export):
    from biomedgpt.serve.engines import load_engine

    with pytest.raises(
        ModelFileError, match=r"decoder\.onnx does not match the sha256 in manifest\.json"
    ) as err:
        load_engine(tampered_export, engine="onnxruntime")
    assert err.value.path == str(tampered_export / "decoder.onnx")
    engine = load_engine(tampered_export, engine="onnxruntime", verify=False)  # --no-verify
    assert engine.verified_files == []


def test_an_intact_export_has_every_file_it_reads_checked(exported_model_dir):
    from biomedgpt.serve.engines import load_engine

    engine = load_engine(exported_model_dir, engine="onnxruntime")
    assert {
        "encoder.onnx",
        "decoder.onnx",
        "config.json",
        "tokenizer.json",
        "serving.json",
        "answers.json",
    } <= set(engine.verified_files)


def test_a_missing_file_or_manifest_refuses_the_export(exported_model_dir, tmp_path):
    from biomedgpt.serve.engines import load_engine

    copy = tmp_path / "model-onnx"
    shutil.copytree(exported_model_dir, copy)
    (copy / "answers.json").unlink()
    with pytest.raises(ModelFileError, match=r"answers\.json is missing \(manifest\.json lists it\)"):
        load_engine(copy, engine="onnxruntime")
    (copy / "manifest.json").unlink()
    with pytest.raises(ModelFileError, match=r"manifest\.json is missing or records no sha256"):
        load_engine(copy, engine="onnxruntime")


def test_serve_refuses_a_changed_export_in_one_line_and_serves_it_with_no_verify(tampered_export):
    port = free_port()
    refused = run_cli(
        "serve", "--model", str(tampered_export), "--port", str(port), no_torch=True, timeout=120
    )
    assert_one_line_error(refused, "decoder.onnx does not match the sha256", "--no-verify")
    assert "serving on" not in refused.stdout

    command = [sys.executable, "-c", NO_TORCH, "serve", "--model", str(tampered_export), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--no-verify"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    try:
        deadline, ready = time.monotonic() + 90, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, process.communicate(timeout=5)[0]
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "--no-verify: the model files are not checked" in output


def test_demo_refuses_a_changed_export(tampered_export):
    from biomedgpt.demo.backends import load_backend

    port = str(free_port())
    refused = run_cli("demo", "--model", str(tampered_export), "--port", port, timeout=120)
    assert_one_line_error(refused, "decoder.onnx does not match the sha256")
    assert load_backend(model=tampered_export, verify=False).describe()  # demo --no-verify


# --- checkpoints: trained tasks and checked weights ----------------------------------------------------------


def test_a_checkpoint_records_its_tasks_prompts_train_answers_and_baselines(trained_run, shards):
    from biomedgpt.eval.runner import iter_samples, resolve_shards
    from biomedgpt.tasks import get_task

    checkpoint = trained_run / "checkpoints" / STEP
    tasks = ["vqa", "classification"]
    assert json.loads((checkpoint / "serving.json").read_text()) == {
        "tasks": tasks,
        "prompts": {t: get_task(t).prompt for t in tasks},
    }
    # answers.json: the answers of the TRAIN samples, fully decoded here, in first-seen order; none held out only
    everything = list(iter_samples(resolve_shards([str(shards)]), tasks=set(tasks)))
    train = [s for s in everything if s.split == "train"]
    answers = json.loads((checkpoint / "answers.json").read_text())
    assert answers == {t: get_task(t).candidate_answers(train) for t in tasks}
    held_out = {get_task(s.task).answer_text(s) for s in everything if s.split != "train"}
    held_out_only = held_out - {get_task(s.task).answer_text(s) for s in train}
    assert held_out_only and not held_out_only & {a for found in answers.values() for a in found}
    baselines = json.loads((checkpoint / "baselines.json").read_text())
    assert baselines == {t: get_task(t).fit_baseline([s for s in train if s.task == t]) for t in tasks}
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    for name in ("serving.json", "answers.json", "baselines.json"):
        assert manifest["files"][name] == sha256_file(checkpoint / name), name


def test_a_resumed_run_reuses_the_recorded_files_without_the_shards(trained_run, shards, tmp_path):
    from biomedgpt.config import load_config
    from biomedgpt.run_config import RunConfig
    from biomedgpt.train.artifacts import run_artifacts

    checkpoint = trained_run / "checkpoints" / STEP
    overrides = [f"data.shards=[{shards}]", "data.mixture={vqa: 1, classification: 1}"]
    cfg = load_config(RunConfig, [QUICKSTART], overrides)
    with shards_moved_away(shards, tmp_path):
        reused = run_artifacts(cfg, resume=checkpoint)
    names = ("serving.json", "answers.json", "baselines.json")
    assert reused == {name: json.loads((checkpoint / name).read_text()) for name in names}


def test_export_copies_the_recorded_files_without_reading_any_shard(trained_run, shards, tmp_path):
    from biomedgpt.export.onnx_export import export_checkpoint

    checkpoint = trained_run / "checkpoints" / STEP
    out = tmp_path / "export"
    with shards_moved_away(shards, tmp_path):
        manifest = export_checkpoint(checkpoint, out)
    for name in ("answers.json", "baselines.json"):
        assert (out / name).read_bytes() == (checkpoint / name).read_bytes(), name
        assert manifest["files"][name] == sha256_file(out / name), name
    recorded = json.loads((checkpoint / "serving.json").read_text())
    serving = json.loads((out / "serving.json").read_text())
    assert {k: serving[k] for k in ("tasks", "prompts")} == recorded
    assert manifest["files"]["serving.json"] == sha256_file(out / "serving.json")


def test_an_older_checkpoint_without_answers_exports_with_a_warning(trained_run, tmp_path, caplog):
    from biomedgpt.export.onnx_export import copy_recorded_files

    older, work = tmp_path / STEP, tmp_path / "work"
    shutil.copytree(trained_run / "checkpoints" / STEP, older)
    work.mkdir()
    (older / "answers.json").unlink()
    (older / "baselines.json").unlink()
    with caplog.at_level("WARNING", logger="biomedgpt.export.onnx_export"):
        copy_recorded_files(older, work, tasks=["vqa", "classification"])
    assert not list(work.iterdir())  # no made-up answer lists, not even {}
    assert "vqa, classification will decode open-ended" in caplog.text and "answers.json" in caplog.text


@contextlib.contextmanager
def shards_moved_away(shards: Path, tmp_path: Path) -> Iterator[None]:
    """The shard folder is elsewhere during the block (nothing can read it), and back afterwards."""
    away = tmp_path / "shards-moved-away"
    shutil.move(shards, away)
    try:
        yield
    finally:
        shutil.move(away, shards)


def test_a_run_without_a_mixture_records_the_tasks_of_its_training_shards(shards):
    from biomedgpt.config import load_config
    from biomedgpt.run_config import RunConfig
    from biomedgpt.train.artifacts import trained_tasks

    cfg = load_config(RunConfig, [QUICKSTART], [f"data.shards=[{shards}]"])
    doc = json.loads((shards / "manifest.json").read_text())
    expected = {t for s in doc["shards"] if s["split"] == "train" for t, n in s["tasks"].items() if n}
    assert trained_tasks(cfg) == sorted(expected) and "vqa" in expected


def test_serve_torch_on_a_run_offers_only_its_trained_tasks(trained_run):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", CLI, "serve", "--engine", "torch", "--model", str(trained_run)]
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    try:
        if not wait_ready(url, process, timeout=120, interval=0.3):
            pytest.fail(f"the torch server did not become ready:\n{process.communicate(timeout=10)[0]}")

        assert httpx.get(f"{url}/ready").json()["tasks"] == ["vqa", "classification"]
        ids = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
        assert ids == [STEP, f"{STEP}:vqa", f"{STEP}:classification"]

        image = base64.b64encode(png_bytes()).decode()
        untrained = httpx.post(f"{url}/v1/tasks/caption", json={"image": image}, timeout=60)
        assert untrained.status_code == 404, untrained.text
        message = untrained.json()["error"]["message"]
        assert "not trained for task 'caption'" in message and "vqa, classification" in message
        chat = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": f"{STEP}:caption",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            },
            timeout=60,
        )
        assert chat.status_code == 404, chat.text
        trained = httpx.post(
            f"{url}/v1/tasks/vqa",
            json={"image": image, "question": "is it normal?", "max_new_tokens": 4},
            timeout=60,
        )
        assert trained.status_code == 200, trained.text
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "checked" in output and "model files against manifest.json" in output


def test_an_older_checkpoint_serves_the_tasks_of_its_run_config(trained_run, tmp_path):
    from biomedgpt.serve.engines import load_engine
    from biomedgpt.serve.types import RequestError, TaskRequest

    copy = tmp_path / STEP
    shutil.copytree(trained_run / "checkpoints" / STEP, copy)
    (copy / "serving.json").unlink()  # a checkpoint written before the trainer recorded its tasks
    with pytest.raises(ModelFileError, match=r"serving\.json is missing \(manifest\.json lists it\)"):
        load_engine(copy, engine="torch")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["serving.json"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    engine = load_engine(copy, engine="torch")
    assert engine.tasks == ("vqa", "classification")
    assert "model.safetensors" in engine.verified_files
    with pytest.raises(RequestError, match="not trained for task 'report'") as err:
        engine.plan(TaskRequest(task="report", image=None))
    assert err.value.status == 404


def test_the_torch_engine_refuses_changed_weights(trained_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from biomedgpt.serve.engines import load_engine

    copy = tmp_path / STEP
    shutil.copytree(trained_run / "checkpoints" / STEP, copy)
    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] * 2
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match=r"model\.safetensors does not match the sha256"):
        load_engine(copy, engine="torch")
    assert load_engine(copy, engine="torch", verify=False).tasks == ("vqa", "classification")


# --- training: one line instead of a traceback --------------------------------------------------------------


def test_finetune_from_a_folder_without_weights_says_so_in_one_line(shards, trained_run, tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(trained_run / "checkpoints" / STEP / "config.json", folder)
    result = run_cli("finetune", *train_args(shards, tmp_path / "run", f"model.init_from={folder}"))
    assert_one_line_error(result, f"model.init_from={folder} has no model.safetensors")
    assert not (tmp_path / "run" / "checkpoints").exists()


class Payload:
    """Unpickled, it would create `marker`: the weights-only loader must refuse it before that."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def poisoned_run(trained_run: Path, tmp_path: Path, *, update_manifest: bool) -> tuple[Path, Path]:
    import torch

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    checkpoint, marker = run / "checkpoints" / STEP, tmp_path / "payload-ran"
    state_path = checkpoint / "trainer_state" / "lightning.ckpt"
    state = torch.load(state_path, weights_only=False)
    state["extra"] = Payload(marker)
    torch.save(state, state_path)
    if update_manifest:  # as someone who can write the folder would
        manifest = json.loads((checkpoint / "manifest.json").read_text())
        manifest["files"]["trainer_state/lightning.ckpt"] = sha256_file(state_path)
        (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(pickle.UnpicklingError):  # what the resume refuses
        torch.load(state_path, weights_only=True)
    return run, marker


def test_resume_from_a_trainer_state_the_safe_loader_refuses_says_so_in_one_line(
    shards, trained_run, tmp_path
):
    run, marker = poisoned_run(trained_run, tmp_path, update_manifest=True)
    extra = ("data.mixture={vqa: 1, classification: 1}", "train.max_steps=4", "train.resume=true")
    result = run_cli("finetune", *train_args(shards, run, *extra))
    last = assert_one_line_error(result, "refusing to resume from", "lightning.ckpt", "GLOBAL")
    assert f"model.init_from={run / 'checkpoints' / STEP}" in last
    assert not marker.exists()
    assert (run / "checkpoints" / "latest").read_text().strip() == STEP  # nothing new written


def test_resume_refuses_a_trainer_state_changed_since_it_was_written(shards, trained_run, tmp_path):
    run, marker = poisoned_run(trained_run, tmp_path, update_manifest=False)
    extra = ("data.mixture={vqa: 1, classification: 1}", "train.max_steps=4", "train.resume=true")
    result = run_cli("finetune", *train_args(shards, run, *extra))
    assert_one_line_error(result, "trainer_state/lightning.ckpt does not match the sha256 in manifest.json")
    assert not marker.exists()
    assert "Restoring states" not in result.stderr  # refused before Lightning opened it
