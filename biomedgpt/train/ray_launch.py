"""The Ray Train launcher: `worker.train_worker` on `TorchTrainer` workers (Ray Train V2, the default in ray 2.60).

Each worker runs the same function as a local run, with Ray's Lightning pieces plugged in
through `WorkerHooks`: `RayDDPStrategy` (or `RayFSDPStrategy`), `RayLightningEnvironment`, `prepare_trainer`, the
worker's rank for the data pipeline's explicit node split, and `ReportCheckpoints`, which hands every checkpoint
folder `SelfDescribingCheckpoint` publishes to `ray.train.report` (copied to `dist.storage`, by default
`<output_dir>/ray/<run name>/step-*`). With `dist.max_failures` > 0, Ray restarts the worker group after a
failure; `ray.train.get_checkpoint()` then gives the last reported folder and the workers resume from it
(weights, optimizer, schedule, step, RNG, data position), exactly as `train.resume=true` does locally.

A local Ray instance (`dist.address: null`) is started here with the CPUs the workers reserve, no dashboard and
its temp files in `<output_dir>/ray_tmp` (or a short folder under /tmp where that path is too long for Ray's
sockets), and shut down at the end; a Ray instance that is already initialized is used as it is and left running.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytorch_lightning as pl

from biomedgpt.config import from_dict, to_dict
from biomedgpt.run_config import RunConfig, absolute_paths
from biomedgpt.train.ray_setup import quiet_ray_workers

log = logging.getLogger(__name__)

# AF_UNIX socket paths hold at most 107 bytes on Linux (Ray checks it); Ray puts its sockets at
# <temp_dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store[.N], up to about 66 characters below temp_dir.
MAX_TEMP_DIR_CHARS = 36


class RayTrainingError(RuntimeError):
    """A Ray Train run that failed for good: a worker error after `dist.max_failures` restarts, or Ray itself."""


class ReportCheckpoints(pl.Callback):
    """Reports each checkpoint folder written by `SelfDescribingCheckpoint` to Ray Train.

    Every rank calls `ray.train.report` once per folder (Ray requires the same number of calls on all ranks; the
    folder is saved on all of them at the same steps); rank 0 passes the folder, the others None. Must come after
    `SelfDescribingCheckpoint` in the callback list, so that it sees the folder of the same step.
    """

    def __init__(self) -> None:
        self._reported: Path | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._report_new(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report_new(trainer)

    def _report_new(self, trainer: pl.Trainer) -> None:
        import ray.train

        from biomedgpt.train.checkpoint import SelfDescribingCheckpoint

        writer = next(cb for cb in trainer.callbacks if isinstance(cb, SelfDescribingCheckpoint))
        folder = writer.last_saved
        if folder is None or folder == self._reported:
            return
        self._reported = folder
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # scalar tensors -> floats
        metrics["step"] = trainer.global_step
        checkpoint = ray.train.Checkpoint.from_directory(folder) if trainer.is_global_zero else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=folder.name)


class StepProgress(pl.Callback):
    """One line every `every` steps on rank 0: step, loss, seconds per step, elapsed and remaining time.

    Lightning's progress bar redraws one terminal line, which Ray forwards from a worker only when the run ends;
    these lines reach the driver's output as they come (and measure the launcher's throughput)."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self._started: float | None = None
        self._first_step = self._shown = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._started is None:  # from the end of the first step: startup and the first batch excluded
            self._started, self._first_step = time.perf_counter(), step
            return
        if (
            not trainer.is_global_zero
            or step == self._shown
            or (step % self.every and step != trainer.max_steps)
        ):
            return
        self._shown = step
        elapsed = time.perf_counter() - self._started
        per_step = elapsed / max(step - self._first_step, 1)
        loss = trainer.callback_metrics.get("train/loss")
        # Straight to the process's stdout: the progress bar's console (rich) re-prints what goes through sys.stdout.
        sys.__stdout__.write(
            f"step {step}/{trainer.max_steps}  loss {float(loss) if loss is not None else float('nan'):.3f}  "
            f"{per_step:.2f} s/step  elapsed {elapsed / 60:.1f} min  "
            f"left {per_step * (trainer.max_steps - step) / 60:.1f} min\n"
        )
        sys.__stdout__.flush()


def ray_worker(config: dict, *, extra_callbacks: Callable[[], list] | None = None) -> None:
    """The per-worker function of `TorchTrainer`: rebuild the run config, plug Ray in, run `train_worker`.

    `extra_callbacks` builds more Lightning callbacks on each worker (tests inject faults with it).
    """
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayFSDPStrategy, RayLightningEnvironment, prepare_trainer

    from biomedgpt.train.worker import WorkerHooks, train_worker

    cfg = from_dict(RunConfig, config)
    context = ray.train.get_context()
    threads = cpu_threads(cfg)
    log.info("rank %d: %d torch CPU thread(s)", context.get_world_rank(), threads)
    # Multitask batches leave parts of the model unused (text-only samples never touch the image stem), so DDP
    # has to look for parameters without gradients at every step.
    strategy = (
        RayFSDPStrategy() if cfg.dist.strategy == "fsdp" else RayDDPStrategy(find_unused_parameters=True)
    )
    hooks = WorkerHooks(
        strategy=strategy,
        plugins=[RayLightningEnvironment()],
        callbacks=[
            ReportCheckpoints(),
            StepProgress(max(cfg.train.log_every, cfg.train.max_steps // 20)),
            *(extra_callbacks() if extra_callbacks else []),
        ],
        prepare_trainer=prepare_trainer,
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        # Ray forwards the bar only when the run ends, and its redraw thread held 6.5% of a worker's py-spy samples
        # on the demo recipe (the step time did not measurably change): StepProgress's lines replace it.
        progress_bar=False,
    )
    checkpoint = ray.train.get_checkpoint()  # the last reported folder after a restart, else None
    if checkpoint is None:
        train_worker(cfg, hooks)
        return
    # A local folder as it is; a remote one (s3://, gs://) downloaded once per node for the whole run.
    with checkpoint.as_directory() as folder:
        log.info("rank %d resumes from the reported checkpoint %s", hooks.rank, checkpoint.path)
        hooks.resume_from = Path(folder)
        train_worker(cfg, hooks)


def cpu_threads(cfg: RunConfig) -> int:
    """Set this worker's torch intra-op threads to the CPUs Ray reserved for it (`dist.cpus_per_worker`); returns
    the count. torch would otherwise start one thread per core of the machine in every worker: 2 workers on 2
    cores then run 4 busy threads that preempt each other, and each step waits for the slowest. The worker's
    data-loading processes (`data.num_workers`) share those CPUs."""
    import torch

    if not cfg.dist.use_gpu:
        torch.set_num_threads(cfg.dist.cpus_per_worker)
    return torch.get_num_threads()


def launch_ray(cfg: RunConfig, *, extra_callbacks: Callable[[], list] | None = None) -> Path | None:
    """Train on `cfg.dist.num_workers` Ray Train workers; returns the final checkpoint folder where this machine
    sees it (the run folder's copy, else the copy in local Ray storage), or None."""
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = absolute_paths(cfg)  # Ray Train starts each worker in a working directory of its own
    if cfg.dist.num_workers > 1 and not cfg.data.resampled:
        log.warning(
            "data.resampled=false with %d workers: ranks that read different shards get different batch counts, "
            "and DDP stalls when one runs out first; data.resampled=true with data.epoch_samples avoids it",
            cfg.dist.num_workers,
        )
    run_dir = Path(cfg.train.output_dir)
    name = f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = cfg.dist.storage or str(run_dir / "ray")
    with ray_session(cfg, run_dir):
        trainer = TorchTrainer(
            train_loop_per_worker=functools.partial(ray_worker, extra_callbacks=extra_callbacks),
            train_loop_config=to_dict(cfg),
            scaling_config=ray.train.ScalingConfig(
                num_workers=cfg.dist.num_workers,
                use_gpu=cfg.dist.use_gpu,
                resources_per_worker={"CPU": cfg.dist.cpus_per_worker},
            ),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=ray.train.FailureConfig(max_failures=cfg.dist.max_failures),
            ),
        )
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as err:
            raise RayTrainingError(failure_message(err, cfg, f"{storage}/{name}")) from err
    return _final_checkpoint(result.checkpoint, run_dir)


def ray_temp_dir(run_dir: Path) -> tuple[Path, bool]:
    """(Ray's temp folder, whether it is a throw-away one): `<run_dir>/ray_tmp` when short enough, else /tmp/..."""
    inside = run_dir / "ray_tmp"
    if len(str(inside)) <= MAX_TEMP_DIR_CHARS:
        return inside, False
    return Path(tempfile.mkdtemp(prefix="bgpt-ray-", dir="/tmp" if Path("/tmp").is_dir() else None)), True


@contextlib.contextmanager
def ray_session(cfg: RunConfig, run_dir: Path) -> Iterator[None]:
    """Start a local Ray instance (or connect to `dist.address`) unless Ray is initialized already; shut down
    what was started here, and remove a throw-away temp folder."""
    import ray

    if ray.is_initialized():
        yield
        return
    if cfg.dist.address:  # an existing cluster: its resources and files are its own
        temp_dir, temporary = None, False
    else:
        temp_dir, temporary = ray_temp_dir(run_dir)
    try:
        if temp_dir is None:
            ray.init(address=cfg.dist.address)
        else:
            start_local_ray(cfg, temp_dir)
            log.info("started a local Ray instance; its files are in %s", temp_dir)
        yield
    finally:
        ray.shutdown()
        if temporary:
            shutil.rmtree(temp_dir, ignore_errors=True)


LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
"""Environment of the local instance's processes: one machine has no node that a cloud can reclaim, so Ray Train's
preemption watcher (one more actor process, polling every 5 s) has nothing to watch."""


def local_runtime_env() -> dict:
    """The local instance's job runtime env, a new dict at each call: `ray.init` replaces the hook in the dict it
    is given by the key it exported it under. Ray unpickles the setup hook in each of its processes: it lives in
    `ray_setup`, which imports nothing heavy."""
    return {"worker_process_setup_hook": quiet_ray_workers, "env_vars": dict(LOCAL_RAY_ENV)}


def prestart_autoscaling_coordinator() -> None:
    """Start Ray's autoscaling coordinator actor now, without waiting for it. Ray Train's controller asks it for
    resources first thing and gives up after 5 s; started cold on a busy 2-core machine it missed that twice (a
    warning with a traceback each time, and 10 s lost). Started beside the controller, it is up in time. A Ray
    without this internal module goes on as before."""
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:
        return
    get_or_create_autoscaling_coordinator()


LOCAL_RAY_STARTS = 3
"""Tries to start the local Ray instance: Ray gives its raylet a fixed 30 s to register with the GCS, which a busy
2-core machine can miss."""


def start_local_ray(cfg: RunConfig, temp_dir: Path) -> None:
    """`ray.init` of a local instance with the CPUs the workers reserve, no dashboard, its files in `temp_dir`;
    tried again (up to `LOCAL_RAY_STARTS` in all) when the node times out during startup."""
    import ray

    for attempt in range(1, LOCAL_RAY_STARTS + 1):
        try:
            ray.init(
                address="local",  # never attach to another instance found through RAY_ADDRESS or /tmp/ray
                num_cpus=cfg.dist.num_workers * cfg.dist.cpus_per_worker,
                include_dashboard=False,
                _temp_dir=str(temp_dir),
                runtime_env=local_runtime_env(),
            )
            prestart_autoscaling_coordinator()
            return
        except Exception as err:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(err) or attempt == LOCAL_RAY_STARTS:
                raise
            log.warning(
                "the local Ray instance did not start in time (try %d of %d): %s",
                attempt,
                LOCAL_RAY_STARTS,
                err,
            )
            ray.shutdown()


def failure_message(err: Exception, cfg: RunConfig, run_path: str) -> str:
    """One line per failed rank (the worker's own exception, not Ray's wrapper), then where the run state is."""
    lines = [f"Ray Train run failed after dist.max_failures={cfg.dist.max_failures} restarts:"]
    failures = getattr(err, "worker_failures", None) or {"-": err}  # a controller error has no ranks
    for rank, failure in sorted(failures.items(), key=lambda item: str(item[0])):
        cause = getattr(failure, "cause", None) or getattr(failure, "controller_failure", None) or failure
        message = (str(cause).strip().splitlines() or [""])[0]
        lines.append(f"  rank {rank}: {type(cause).__name__}: {message}")
    lines.append(f"reported checkpoints and Ray's run state: {run_path}")
    return "\n".join(lines)


def _final_checkpoint(checkpoint, run_dir: Path) -> Path | None:
    """The run folder's copy of Ray's final checkpoint, else that checkpoint where it is local, else None."""
    if checkpoint is None:
        return None
    name = Path(checkpoint.path).name
    if (run_dir / "checkpoints" / name / "manifest.json").is_file():
        return run_dir / "checkpoints" / name
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(checkpoint.path)
    log.info("the final checkpoint is in Ray storage: %s", checkpoint.path)
    return None
