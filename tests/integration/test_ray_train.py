"""The Ray Train launcher (`biomedgpt.train.ray_launch`) on a real local Ray with 2 CPU workers.

The fault-tolerance test kills rank 1 with SIGKILL after a checkpoint was reported (first attempt only); Ray Train
restarts the worker group and both workers resume from the reported checkpoint up to max_steps.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

from biomedgpt import cli
from biomedgpt.config import load_config
from biomedgpt.run_config import RunConfig

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
# Checkpoints at 2, 4 and 6: one before the kill at step 3, one during the second attempt and the final one.
# The time goes to starting the Ray workers (twice), not to the steps, so few steps keep every case.
MAX_STEPS, CKPT_EVERY, KILL_STEP = 6, 2, 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    code = cli.main(["shard", "--synthetic", "80", "--out", str(out), "--image-size", "64", "--no-progress"])
    assert code == 0
    return out


class RecordStart(pl.Callback):
    """Rank 0 appends the step each attempt starts from to `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            with self.path.open("a") as f:
                f.write(f"{trainer.global_step}\n")


class KillRankOnce(pl.Callback):
    """SIGKILLs rank 1 at `step`, once (the marker file remembers), after Ray committed a reported checkpoint."""

    def __init__(self, marker: Path, step: int) -> None:
        self.marker, self.step = marker, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank != 1 or trainer.global_step != self.step or self.marker.exists():
            return
        import ray.train

        reported = ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED
        )
        self.marker.write_text(f"killed at step {self.step} after {len(reported)} reported checkpoints\n")
        os.kill(os.getpid(), signal.SIGKILL)


def fault_callbacks(tmp_path: Path) -> list[pl.Callback]:
    return [RecordStart(tmp_path / "starts.txt"), KillRankOnce(tmp_path / "killed", KILL_STEP)]


@pytest.fixture
def local_ray_env(monkeypatch):
    """Environment for a private local Ray: no auth, no usage stats, no cluster picked up from the environment."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # The workers rebuild the fault callbacks from this module; ship it by value so they need not import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.slow
def test_two_cpu_workers_survive_a_killed_worker(tmp_path, shards, local_ray_env, monkeypatch):
    from biomedgpt.train import ray_launch
    from biomedgpt.train.callbacks import read_metrics_csv

    ray = local_ray_env
    temp_dirs = []

    def recorded_temp_dir(run_dir: Path) -> tuple[Path, bool]:
        temp_dirs.append(ray_launch_temp_dir(run_dir))
        return temp_dirs[-1]

    ray_launch_temp_dir = ray_launch.ray_temp_dir
    monkeypatch.setattr(ray_launch, "ray_temp_dir", recorded_temp_dir)
    run_dir = tmp_path / "run"
    cfg = load_config(
        RunConfig,
        [QUICKSTART],
        [
            f"data.shards=[{shards / 'synthetic-train-000000.tar'}]",
            "data.resampled=true",  # every rank reads the one shard and yields the same number of batches
            "data.epoch_samples=64",
            f"train.output_dir={run_dir}",
            f"train.max_steps={MAX_STEPS}",
            f"train.ckpt_every={CKPT_EVERY}",
            "train.val_every=0",
            "dist.launcher=ray",
            "dist.num_workers=2",
            "dist.max_failures=1",
        ],
    )

    final = ray_launch.launch_ray(cfg, extra_callbacks=functools.partial(fault_callbacks, tmp_path))

    assert (tmp_path / "killed").read_text().startswith(f"killed at step {KILL_STEP} after 1 reported")
    starts = [int(line) for line in (tmp_path / "starts.txt").read_text().split()]
    assert starts == [0, CKPT_EVERY], "the second attempt resumes from the reported checkpoint"
    assert final == run_dir / "checkpoints" / f"step-{MAX_STEPS:08d}"
    assert f'"step": {MAX_STEPS}' in (final / "manifest.json").read_text()
    (ray_run,) = (run_dir / "ray").iterdir()
    reported = sorted(p.name for p in ray_run.glob("step-*"))
    assert reported == [f"step-{s:08d}" for s in range(CKPT_EVERY, MAX_STEPS + 1, CKPT_EVERY)]
    losses = dict(read_metrics_csv(run_dir / "logs" / "metrics.csv")["train/loss"])
    assert sorted(losses) == list(range(MAX_STEPS)), "one log over both attempts"
    # Ray hygiene: the instance started for the run is shut down and its throw-away temp folder removed
    # (tmp_path is too long for Ray's socket paths, so the temp folder went to /tmp).
    assert not ray.is_initialized()
    assert len(temp_dirs) == 1 and temp_dirs[0][1] and not temp_dirs[0][0].exists()


def test_short_run_folders_keep_ray_files_inside(tmp_path):
    from biomedgpt.train.ray_launch import MAX_TEMP_DIR_CHARS, ray_temp_dir

    short = Path("/tmp/r1")
    assert ray_temp_dir(short) == (short / "ray_tmp", False)
    long_dir, temporary = ray_temp_dir(tmp_path / ("x" * MAX_TEMP_DIR_CHARS))
    try:
        assert temporary and long_dir.is_dir() and len(str(long_dir)) <= MAX_TEMP_DIR_CHARS
    finally:
        long_dir.rmdir()


def test_relative_paths_become_absolute_for_the_workers(tmp_path, monkeypatch):
    from biomedgpt.run_config import absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        RunConfig,
        [QUICKSTART],
        ["data.shards=['d/x-{000000..000001}.tar', 's3://bucket/y.tar']", "train.output_dir=runs/a"],
    )
    fixed = absolute_paths(cfg)
    assert fixed.data.shards == [f"{tmp_path}/d/x-{{000000..000001}}.tar", "s3://bucket/y.tar"]
    assert fixed.train.output_dir == f"{tmp_path}/runs/a"
    assert fixed.dist.storage is None and fixed.model.init_from is None


def test_every_ray_process_unpickles_the_setup_hook_without_torch():
    """Ray unpickles the local instance's setup hook in each process it starts (controller, bookkeeping actors,
    workers); it once pulled PyTorch Lightning and torch into all of them, about 8 s of CPU each."""
    ray = pytest.importorskip("ray")
    from biomedgpt.train.ray_launch import local_runtime_env

    hook = local_runtime_env()["worker_process_setup_hook"]
    assert callable(hook)
    blob = ray.cloudpickle.dumps(hook)
    code = (
        "import pickle, sys\n"
        "hook = pickle.loads(sys.stdin.buffer.read())\n"
        "hook()\n"
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning_fabric', 'biomedgpt.train.ray_launch')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input=blob, capture_output=True, check=True, cwd=REPO
    )
    assert result.stdout.decode().strip() == "[]"


def test_worker_errors_surface_per_rank():
    pytest.importorskip("ray")
    from ray.train import WorkerGroupError

    from biomedgpt.train.ray_launch import failure_message

    cfg = load_config(RunConfig, [QUICKSTART], ["dist.launcher=ray", "dist.num_workers=2"])
    error = WorkerGroupError("boom", {1: ValueError("bad batch\nmore detail"), 0: RuntimeError("peer gone")})
    message = failure_message(error, cfg, "/runs/a/ray/a-1")
    assert message.splitlines() == [
        "Ray Train run failed after dist.max_failures=0 restarts:",
        "  rank 0: RuntimeError: peer gone",
        "  rank 1: ValueError: bad batch",
        "reported checkpoints and Ray's run state: /runs/a/ray/a-1",
    ]
