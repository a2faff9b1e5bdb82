"""Tasks: one file per task (prompt, templates, target serialization, decoding constraint, postprocess).

    TASKS: dict[str, Task]      every task by name (the names of biomedgpt.data.schema.TASKS)
    get_task(name) -> Task      with a "did you mean" for unknown names

Adding a task: one file here defining a `Task` subclass and `TASK = ...`, plus its line below.
"""

from __future__ import annotations

import difflib

from biomedgpt.tasks import (
    caption,
    classification,
    detection,
    grounding,
    image_infilling,
    report,
    segmentation,
    summarization,
    text_infilling,
    vqa,
)
from biomedgpt.tasks.base import CONSTRAINTS, TargetTooLongError, Task, TaskUnavailableError

TASKS: dict[str, Task] = {
    module.TASK.name: module.TASK
    for module in (
        caption,
        report,
        vqa,
        classification,
        grounding,
        detection,
        segmentation,
        image_infilling,
        text_infilling,
        summarization,
    )
}


class UnknownTaskError(KeyError):
    """No task has that name; the message carries a "did you mean"."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_task(name: str) -> Task:
    """The task called `name`; `UnknownTaskError` (a KeyError) with a "did you mean" otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), TASKS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownTaskError(f"unknown task {name!r}{hint} (known: {', '.join(TASKS)})") from None


__all__ = [
    "CONSTRAINTS",
    "TASKS",
    "TargetTooLongError",
    "Task",
    "TaskUnavailableError",
    "UnknownTaskError",
    "get_task",
]
