"""What a checkpoint folder records about its training data, computed once when a run starts.

    serving.json     {"tasks": [task, ...], "prompts": {task: prompt}}
                     the tasks trained (what a server may offer) and, for each, the instruction the model was
                     trained with as its fixed prompt (`Task.prompt`): servers, eval, the demo and the int8 gate
                     read prompts from the model folder, not from code
    answers.json     {task: [answer, ...]}
                     each trained closed-set task (`Task.closed_set`): `Task.candidate_answers` of its TRAIN
                     samples, distinct, in first-seen order; never a val or test answer
    baselines.json   {task: statistic}
                     each trained task whose `Task.fit_baseline(train samples)` returns something (JSON)

`run_artifacts(cfg)` reads the TRAIN shards the loader reads (`data.shards`, their `-train-` files, the mixture's
tasks), JSON members only: pixels are never decoded (a sample's `image` is a zero-stride array with the recorded
shape and dtype, so image sizes are known), masks only for tasks that use them (`Task.uses_mask`). A resumed run
reuses the files of the checkpoint it resumes from (checked against its manifest) instead of reading the shards
again. Where the shards cannot be read here (remote URLs, missing files), answers.json and baselines.json are not
written and a warning says so; serving.json still records what the shard manifests say.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biomedgpt.data.schema import Sample
    from biomedgpt.run_config import RunConfig

log = logging.getLogger(__name__)

SERVING, ANSWERS, BASELINES = "serving.json", "answers.json", "baselines.json"
ARTIFACT_FILES = (SERVING, ANSWERS, BASELINES)
"""The files every checkpoint folder of a run holds (when known), written by `SelfDescribingCheckpoint`."""

_MEMBER_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key/extension split (data/shards.py)


def run_artifacts(cfg: RunConfig, *, resume: Path | None = None) -> dict[str, Any]:
    """{file name: JSON document} for every checkpoint folder of this run (see the module docstring).

    `resume`: the checkpoint a resumed run starts from; the files it recorded are reused as they are (so every
    checkpoint of a run records the same lists, whatever happened to the shards since). A checkpoint written
    before prompts were recorded has them recomputed from the shards (deterministic: the same TRAIN shards give
    the same lists).
    """
    if resume is not None:
        recorded = recorded_artifacts(resume)
        if recorded is not None:
            tasks = trained_tasks(cfg)
            if tasks is not None and tasks != recorded[SERVING].get("tasks"):
                log.warning(
                    "resuming from %s, which records the tasks %s; this config trains %s: the checkpoints keep "
                    "the recorded tasks, prompts and answers",
                    resume,
                    recorded[SERVING].get("tasks"),
                    tasks,
                )
            log.info("reusing %s of %s", ", ".join(recorded), resume)
            return recorded
        log.info("%s records no prompts: reading the training shards for them", resume)
    return compute_artifacts(cfg)


def recorded_artifacts(folder: Path) -> dict[str, Any] | None:
    """The artifact files a checkpoint folder holds, checked against its manifest; None when it has no
    serving.json with prompts (written before the trainer recorded them)."""
    from biomedgpt.hashing import verify_files

    names = [name for name in ARTIFACT_FILES if (folder / name).is_file()]
    if SERVING not in names:
        return None
    verify_files(
        folder,
        names,
        require_manifest=False,
        what=f"the checkpoint {folder}",
        hint=f"restore {folder}, or remove it to resume from an earlier checkpoint",
    )
    docs = {name: json.loads((folder / name).read_text()) for name in names}
    return docs if isinstance(docs[SERVING], dict) and "prompts" in docs[SERVING] else None


def compute_artifacts(cfg: RunConfig) -> dict[str, Any]:
    """serving.json, answers.json and baselines.json from the run's TRAIN shards (see the module docstring)."""
    from biomedgpt.data.pipeline import expand_shards, shards_with_task
    from biomedgpt.tasks import get_task

    started = time.perf_counter()
    urls = expand_shards(cfg.data.shards, split="train")
    tasks = trained_tasks(cfg)
    unreadable = [url for url in urls if not _local_file(url)]
    if unreadable:
        log.warning(
            "the training shards cannot be read here (%s%s): the checkpoints record %s but no answers.json or "
            "baselines.json (closed-set tasks will decode open-ended; eval reports no baselines)",
            ", ".join(unreadable[:3]),
            ", ..." if len(unreadable) > 3 else "",
            f"the tasks {tasks} and their prompts" if tasks else "no tasks",
        )
        return {SERVING: serving_doc(tasks)} if tasks else {}
    if tasks is not None:
        read = list(dict.fromkeys(url for task in tasks for url in shards_with_task(urls, task)))
    else:
        read = urls
    samples, seen = read_train_samples(read, tasks=set(tasks) if tasks is not None else None)
    if tasks is None:  # no mixture and no shard manifest: the tasks of the samples the loader reads
        tasks = sorted(seen) or None
    docs: dict[str, Any] = {SERVING: serving_doc(tasks)} if tasks else {}
    answers: dict[str, list[str]] = {}
    baselines: dict[str, Any] = {}
    for name in tasks or []:
        task, own = get_task(name), samples.get(name, [])
        if task.closed_set:
            if found := task.candidate_answers(own):
                answers[name] = found
            else:
                log.warning("closed-set task %s has no TRAIN answer: it will decode open-ended", name)
        fit = getattr(task, "fit_baseline", None)  # Task.fit_baseline: a statistic of the TRAIN samples
        if fit is not None and own and (baseline := fit(own)) is not None:
            baselines[name] = _jsonable(baseline)
    docs[ANSWERS] = answers
    if baselines:
        docs[BASELINES] = baselines
    log.info(
        "recorded prompts, answers and baselines of %s from %d TRAIN samples of %d shards in %.1f s",
        ", ".join(tasks or []) or "no task",
        sum(len(v) for v in samples.values()),
        len(read),
        time.perf_counter() - started,
    )
    return docs


def serving_doc(tasks: list[str]) -> dict[str, Any]:
    """serving.json: the tasks trained and the prompt each was trained with (BiomedGPT's, `Task.prompt`)."""
    from biomedgpt.tasks import get_task

    return {"tasks": list(tasks), "prompts": {name: get_task(name).prompt for name in tasks}}


def trained_tasks(cfg: RunConfig) -> list[str] | None:
    """The tasks this run trains on, recorded in each checkpoint's serving.json: a mixture's tasks of weight > 0
    that a training shard holds; without a mixture, the tasks the training shards' manifests count. None when the
    shard manifests do not say (remote URLs, shards without a manifest)."""
    from biomedgpt.data.pipeline import expand_shards, shards_with_task
    from biomedgpt.data.shards import read_manifest

    urls = expand_shards(cfg.data.shards, split="train")
    if cfg.data.mixture:
        return [t for t, w in cfg.data.mixture.items() if w > 0 and shards_with_task(urls, t)] or None
    tasks: set[str] = set()
    listed: dict[Path, dict[str, dict]] = {}
    for url in urls:
        path = _local_file(url)
        if path is None:
            return None
        if path.parent not in listed:
            try:
                doc = read_manifest(path.parent)
                listed[path.parent] = {s["file"]: s.get("tasks") or {} for s in doc["shards"]}
            except (OSError, ValueError, KeyError, TypeError):
                return None
        counts = listed[path.parent].get(path.name)
        if counts is None:
            return None
        tasks.update(t for t, n in counts.items() if n)
    return sorted(tasks) or None


def read_train_samples(
    urls: Iterable[str], *, tasks: set[str] | None
) -> tuple[dict[str, list[Sample]], set[str]]:
    """({task: its TRAIN samples}, every task a sample of these shards has), for `tasks` (None: all).

    Only JSON members (and the masks of tasks that use them) are read: a shard's images are skipped, not
    decoded. A sample or shard that cannot be read is skipped with a warning, as the training loader skips it.
    """
    from biomedgpt.tasks import get_task

    samples: dict[str, list[Sample]] = defaultdict(list)
    seen: set[str] = set()
    skipped = 0
    for url in urls:
        path = _local_file(url)
        try:
            for sample in _iter_light_samples(path, tasks=tasks, uses_mask=lambda t: get_task(t).uses_mask):
                if sample is None:
                    skipped += 1
                    continue
                seen.add(sample.task)
                if sample.split == "train" and (tasks is None or sample.task in tasks):
                    samples[sample.task].append(sample)
        except (tarfile.TarError, OSError, EOFError) as err:
            log.warning(
                "skipping the unreadable shard %s for the recorded answers and baselines: %s", url, err
            )
    if skipped:
        log.warning(
            "%d samples of the training shards could not be read for the answers and baselines", skipped
        )
    return dict(samples), seen


def _iter_light_samples(path: Path, *, tasks: set[str] | None, uses_mask) -> Iterator[Sample | None]:
    """The samples of one tar without their pixels (None for one that does not parse)."""
    with tarfile.open(path, mode="r:") as tar:
        key, members = None, {}
        for member in tar:
            match = _MEMBER_RE.match(member.name) if member.isreg() else None
            if match is None:
                continue
            if members and match.group(1) != key:
                yield _light_sample(tar, key, members, tasks=tasks, uses_mask=uses_mask)
                members = {}
            key = match.group(1)
            members[match.group(2)] = member
        if members:
            yield _light_sample(tar, key, members, tasks=tasks, uses_mask=uses_mask)


def _light_sample(tar: tarfile.TarFile, key: str, members: dict, *, tasks, uses_mask) -> Sample | None:
    import numpy as np

    from biomedgpt.data.schema import decode_sample

    try:
        doc = json.loads(tar.extractfile(members["json"]).read())
        task = doc["task"]
        if tasks is not None and task not in tasks:
            return _Other(task)
        wanted = {"__key__": key}
        mask = doc.get("mask_member") if uses_mask(task) else None
        if mask:
            wanted[mask] = tar.extractfile(members[mask]).read()
        sample = decode_sample(
            {**wanted, "json": {**doc, "image_info": None, "mask_member": mask}}, validate=False
        )
        info = doc.get("image_info")
        if info:  # the recorded shape and dtype, no pixels: sizes are known, nothing is decoded
            sample.image = np.broadcast_to(np.zeros((), dtype=info["dtype"]), tuple(info["shape"]))
        return sample
    except Exception as err:  # a corrupt sample must not stop the run: the loader skips it too
        log.debug("skipping sample %s: %s", key, err)
        return None


class _Other:
    """A sample of a task the run does not train on: only its task is read."""

    split = None

    def __init__(self, task: str) -> None:
        self.task = task


def _local_file(url: str) -> Path | None:
    path = Path(url.removeprefix("file:"))
    return path if "://" not in url and path.is_file() else None


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays inside a statistic -> plain JSON values."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
