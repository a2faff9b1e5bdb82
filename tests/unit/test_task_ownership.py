"""Tasks own their knowledge: the layers that serve, score, export, train and show a model never name a task.

A task's request field, prompt, decoding budget, output kind, reference, metrics and baseline live on its
`Task` object (`biomedgpt/tasks/`); `serve`, `eval`, `export`, `demo`, `train` and `model` ask it. This test
reads their code (AST: docstrings and comments do not count) and counts the string constants that are a task
name. The metric functions (`eval/metrics`) are the one allowed place: a registry of which function scores
which task, and error messages that say which metric refused an input.
"""

from __future__ import annotations

import ast
from pathlib import Path

from biomedgpt.data.schema import TASKS
from biomedgpt.tasks import SERVED_TASKS, get_task

PACKAGE = Path(__file__).resolve().parents[2] / "biomedgpt"
CHECKED = ("serve", "eval", "export", "demo", "train", "model")
ALLOWED = ("eval/metrics/",)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function) or attribute docstrings."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for stmt in body:
            if (
                isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                found.add(id(stmt.value))
    return found


def task_name_literals(root: Path = PACKAGE) -> list[str]:
    """`path:line: 'name'` for every string constant equal to a task name in the checked packages."""
    names = set(TASKS)
    hits = []
    for package in CHECKED:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if relative.startswith(ALLOWED):
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            skip = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in names and id(node) not in skip:
                    hits.append(f"{relative}:{node.lineno}: {node.value!r}")
    return hits


def test_no_layer_above_the_tasks_names_a_task():
    hits = task_name_literals()
    assert not hits, "ask the Task object instead of naming a task:\n" + "\n".join(hits)


def test_the_count_sees_a_task_name(tmp_path):
    """The scan finds what it looks for: a branch on a task name in a checked package is reported."""
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "bad.py").write_text(
        '"""Doc naming "vqa"."""\n\ndef f(task):\n    return task == "vqa"\n'
    )
    for package in CHECKED[1:]:
        (tmp_path / package).mkdir()
    assert task_name_literals(tmp_path) == ["serve/bad.py:4: 'vqa'"]


def test_served_tasks_describe_what_serving_needs():
    """Every served task says what the API and the demo need: a title, an output kind, and a request field that
    is its prompt's slot (or none, when the prompt has no slot)."""
    from biomedgpt.tasks.base import OUTPUT_KINDS, template_fields

    assert SERVED_TASKS
    for name in SERVED_TASKS:
        task = get_task(name)
        assert task.title and task.output_kind in OUTPUT_KINDS, name
        slots = template_fields(task.prompt)
        assert slots == ({task.request_field} if task.request_field else set()), name
        if task.request_field:
            assert task.field_label and task.field_example, name
            sample = task.request_sample(task.field_example)
            assert task.field_example.rstrip("?") in task.build_prompt(sample), name
        if task.closed_set:
            assert task.output_kind in ("answer", "label"), name
