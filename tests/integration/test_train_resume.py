"""Resume and crash safety of training, on the quickstart's tiny model and synthetic shards.

- A run stopped at step 8 and resumed with train.resume=true ends where an uninterrupted run ends, with the same
  per-step train loss and weights (dropout on, validation at the stop step, the stop in the middle of a data
  epoch: RNG state and data position both have to be restored).
- A process SIGKILLed while it writes a checkpoint leaves `latest` on the previous complete folder, which loads;
  the next run removes the partial folder and goes on from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl

from biomedgpt import cli
from biomedgpt.config import load_config
from biomedgpt.run_config import RunConfig

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    code = cli.main(["shard", "--synthetic", "200", "--out", str(out), "--image-size", "64", "--no-progress"])
    assert code == 0
    return out


def overrides(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"data.shards=[{shards / 'synthetic-train-000000.tar'}]",
        f"data.val_shards=[{shards / 'synthetic-val-000000.tar'}]",
        f"train.output_dir={run_dir}",
        *extra,
    ]


class StopAtStep(pl.Callback):
    """Ends fit right after the optimizer step `step` (and the checkpoint written there)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.should_stop = True


def train_losses(run_dir: Path) -> dict[int, float]:
    from biomedgpt.train.callbacks import read_metrics_csv

    return dict(read_metrics_csv(run_dir / "logs" / "metrics.csv")["train/loss"])


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_resumed_run_continues_the_uninterrupted_loss_curve(tmp_path, shards):
    from safetensors.torch import load_file

    from biomedgpt.train.worker import WorkerHooks, train_worker

    # dropout > 0: a resumed run must restore the RNG; validation at the stop step (8) must not shift it.
    # Data epochs of 6 batches: step 8 is in the middle of the second one (the data position has an epoch).
    schedule = [
        *("train.max_steps=12", "train.ckpt_every=4", "train.val_every=8", "model.dropout=0.1"),
        *("data.resampled=true", "data.epoch_samples=12"),
    ]

    def config(name: str, *extra: str) -> RunConfig:
        return load_config(RunConfig, [QUICKSTART], overrides(shards, tmp_path / name, *schedule, *extra))

    full_final = train_worker(config("full"))
    stopped = train_worker(config("part"), WorkerHooks(callbacks=[StopAtStep(8)]))
    assert stopped is not None
    assert {k: manifest(stopped)[k] for k in ("step", "epoch", "epoch_batches")} == {
        "step": 8,
        "epoch": 1,
        "epoch_batches": 2,
    }
    assert sorted(train_losses(tmp_path / "part")) == list(range(8))
    resumed_final = train_worker(config("part", "train.resume=true"))

    assert full_final is not None and resumed_final is not None
    assert manifest(full_final)["step"] == manifest(resumed_final)["step"] == 12
    full, resumed = train_losses(tmp_path / "full"), train_losses(tmp_path / "part")
    assert sorted(full) == sorted(resumed) == list(range(12)), (
        "the resumed log keeps the steps before the stop"
    )
    for step in range(12):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), f"train/loss at step {step}"
    # serving.json, answers.json, baselines.json: recorded when the run starts, reused by the resumed run
    for name in ("serving.json", "answers.json", "baselines.json"):
        recorded = (stopped / name).read_bytes()
        assert (resumed_final / name).read_bytes() == recorded == (full_final / name).read_bytes(), name
    full_weights = load_file(full_final / "model.safetensors")
    resumed_weights = load_file(resumed_final / "model.safetensors")
    assert full_weights.keys() == resumed_weights.keys()
    for name, tensor in full_weights.items():
        assert (tensor - resumed_weights[name]).abs().max().item() < 1e-5, name


# Runs `biomedgpt ARGS...` after making write_manifest (the last write before a folder is published) signal the
# test and sleep at KILL_STEP: by then the model, tokenizer and trainer state are in the .partial folder.
SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import biomedgpt.train.checkpoint as checkpoint
    from biomedgpt import cli

    marker, kill_step, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    write_manifest = checkpoint.write_manifest

    def slow_write_manifest(folder, *, step, extra=None):
        if step == kill_step:
            marker.write_text(str(folder))
            time.sleep(600)
        return write_manifest(folder, step=step, extra=extra)

    checkpoint.write_manifest = slow_write_manifest
    sys.exit(cli.main(argv))
    """
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_while_writing_a_checkpoint_leaves_latest_complete(tmp_path, shards):
    from biomedgpt.model import load_pretrained
    from biomedgpt.train.run_folders import latest_checkpoint

    run_dir, root = tmp_path / "run", tmp_path / "run" / "checkpoints"
    argv = [
        "pretrain",
        "-c",
        str(QUICKSTART),
        *overrides(shards, run_dir, "train.max_steps=4", "train.ckpt_every=2", "train.val_every=0"),
    ]
    script, marker = tmp_path / "slow_writer.py", tmp_path / "writing"
    script.write_text(SLOW_WRITER)
    with (tmp_path / "writer.log").open("w") as output:
        writer = subprocess.Popen(
            [sys.executable, str(script), str(marker), "4", *argv], stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 300
            while not marker.exists() and writer.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert marker.exists(), (tmp_path / "writer.log").read_text()[-3000:]
            os.kill(writer.pid, signal.SIGKILL)
        finally:
            writer.kill()
            writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL

    partial = Path(marker.read_text())
    assert partial == root / ".step-00000004.partial"
    assert (partial / "model.safetensors").is_file() and not (partial / "manifest.json").exists()
    latest = latest_checkpoint(root)
    assert latest == root / "step-00000002"
    assert (root / "latest").read_text().strip() == "step-00000002"
    for name, digest in manifest(latest)["files"].items():
        assert sha256(latest / name) == digest, name
    model, processor = load_pretrained(latest)
    assert model.config.vocab_size == len(processor.tokenizer)

    # The next run cleans the partial folder up and continues from step 2 to the end.
    assert cli.main([*argv, "train.resume=true"]) == 0
    assert not list(root.glob(".step-*")), sorted(p.name for p in root.iterdir())
    final = latest_checkpoint(root)
    assert final == root / "step-00000004" and manifest(final)["step"] == 4
    load_pretrained(final)


def test_clean_partials_removes_only_what_killed_writers_leave(tmp_path):
    from biomedgpt.train.run_folders import clean_partials, latest_checkpoint

    complete = tmp_path / "step-00000002"
    complete.mkdir()
    (complete / "manifest.json").write_text("{}")
    (tmp_path / "latest").write_text("step-00000002\n")
    leftovers = [tmp_path / ".step-00000004.partial", tmp_path / ".step-00000002.old-123"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".latest.tmp-123").write_text("step-00000004\n")

    clean_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000002"]
    assert latest_checkpoint(tmp_path) == complete
