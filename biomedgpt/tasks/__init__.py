"""Tasks: one file per task (prompt, templates, target serialization, decoding constraint, postprocess).

    TASKS: dict[str, Task]      every task by name (the names of biomedgpt.data.schema.TASKS)
    get_task(name) -> Task      with a "did you mean" for unknown names

Adding a task: one file here defining a `Task` subclass and `TASK = ...`, plus its line below
(docs/ARCHITECTURE.md, "Add a task"). Serving, eval, export and the demo ask the task object; none of them
names a task.
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
        segmentation,
        grounding,
        detection,
        image_infilling,
        text_infilling,
        summarization,
    )
}

SERVED_TASKS: tuple[str, ...] = tuple(name for name, task in TASKS.items() if task.served)
"""The tasks an API or demo may offer for an image (a model folder says which of them its model learned)."""
REQUEST_FIELDS: dict[str, str] = {
    name: t.request_field for name, t in TASKS.items() if t.served and t.request_field
}
"""Served task -> the request field that fills its prompt's slot (`question`, `text`, `structure`)."""


def free_instruction_task() -> str:
    """The task that answers a free instruction with open text (the chat endpoint without a task)."""
    return next(name for name, task in TASKS.items() if task.answers_free_instructions)


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
    "REQUEST_FIELDS",
    "SERVED_TASKS",
    "TASKS",
    "TargetTooLongError",
    "Task",
    "TaskUnavailableError",
    "UnknownTaskError",
    "free_instruction_task",
    "get_task",
]
