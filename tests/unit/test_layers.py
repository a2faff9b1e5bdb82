"""The layer order of `biomedgpt`, checked by reading every module's imports (AST only: nothing is imported).

docs/ARCHITECTURE.md describes the layers. A unit is a top-level subpackage or module of `biomedgpt`, with three
changes. The run-config sections (`biomedgpt.run_config`, `config.py` of data/train/eval, `model/run_config.py`)
belong to the unit `config`: they are plain dataclasses that import `biomedgpt.config` alone, and the rule below
keeps them so. (`serve/config.py` is not one of them: it imports serve modules.) The sample schema,
`biomedgpt.data.schema`, is the unit `schema`: the tasks read it, while the rest of `biomedgpt.data` (shards, the
streaming pipeline, collate) sits above the tasks and calls them. The metrics, `biomedgpt.eval.metrics`, and
the mask RLE, `biomedgpt.eval.rle` (pure Python and numpy, importing nothing else of biomedgpt), are the unit
`metrics`: the tasks score and encode masks with them, while the rest of `biomedgpt.eval` (the runner) sits
above the tasks. Layers, bottom to top; a module may import its own unit and the units of LOWER layers, never
another unit of its own layer or one above:

    0  biomedgpt, errors   the root package (__version__); exception types the CLI prints as one line
    1  config, hashing     typed YAML configs and the run-config tree; sha256 of files and manifests
    2  tokenization        vocabulary layout, BPE, location bins, decoding ranges, the image VQ tokenizer
    3  model               configuration, modeling, the generation loop, processor, constraints, the two
                           graph modules the ONNX export writes and the torch engine runs, model folders, conversion
    4  schema, metrics     `data/schema.py`: the sample schema (Sample, its fields, encode/decode);
                           `eval/metrics/`, `eval/rle.py`: metric functions (BLEU, CIDEr, VQA, mAP...), mask RLE
    5  tasks               one file per task: prompts, targets, constraint, postprocess
    6  data                shards, the streaming pipeline, collate, augment (the core loader)
    7  ingest              the JSONL manifest input, converters, the demo corpus, DICOM, de-identification,
                           volumes, image files, the registry, synthetic data
    8  train, serve        Lightning training, its launchers and the VQ tokenizer's trainer; engines,
                           decoding, scheduler, HTTP API
    9  eval                the evaluation runner, which answers every sample through serve's engine
    10 export, demo        ONNX export, parity check and int8 gate (checked through serve's ONNX Runtime
                           engine); the Gradio app over an engine or the HTTP API
    11 commands            one module per CLI subcommand
    12 cli                 the subcommand table

What counts as an import: every `import` and `from ... import`, at module level, inside functions and under
`if TYPE_CHECKING:`, plus string constants that name a biomedgpt module exactly (the `importlib` tables of
`cli.py`, `model/__init__.py`, `ingest/converters/__init__.py`, and the tasks' optional components).
Function-level imports count as much as module-level ones. The project imports heavy layers inside functions (CLI
subcommands, lazy backends) to keep start-up cheap, not to hide a dependency, so the direction rule holds for them
too.

Import cost is a separate rule, on module-level imports only: `test_light_modules_import_no_torch` follows the
module-level imports, transitively, from the modules that promise not to import torch (every serve module but
the torch step model, `cli`, `run_config`, the `tokenization` and `model` packages, `eval.metrics`, and the
`shard` command with its converter options, so that `biomedgpt shard --help` stays light).

No import goes up a layer (`UPWARD_EXCEPTIONS` is empty) and no modules import each other (`KNOWN_CYCLES` is
empty): issue 13 removed the last ones. Cycles count runtime imports (module level, function level, dynamic), not
`TYPE_CHECKING` ones. A new upward import or a new cycle fails. Should one ever have to be allowed, list it with its
reason; a listed one that no longer occurs fails too, so that the lists only shrink.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "biomedgpt"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("biomedgpt", "errors"),
    ("config", "hashing"),
    ("tokenization",),
    ("model",),
    ("schema", "metrics"),
    ("tasks",),
    ("data",),
    ("ingest",),
    ("train", "serve"),
    ("eval",),
    ("export", "demo"),
    ("commands",),
    ("cli",),
)
LAYER_OF: dict[str, int] = {unit: level for level, units in enumerate(LAYERS) for unit in units}

CONFIG_SECTIONS = frozenset(
    {
        "biomedgpt.run_config",
        "biomedgpt.data.config",
        "biomedgpt.train.config",
        "biomedgpt.eval.config",
        "biomedgpt.model.run_config",
    }
)
"""Run-config dataclasses that live next to the package they configure but belong to the `config` unit."""
SCHEMA = "biomedgpt.data.schema"
"""The sample schema: the unit `schema`, below the tasks (the rest of `biomedgpt.data` sits above them)."""
METRICS = ("biomedgpt.eval.metrics", "biomedgpt.eval.rle")
"""The metric functions (a package) and mask RLE: the unit `metrics`, below the tasks (the eval runner sits above)."""

# (importing module, unit it imports against the layer order) -> reason: the upward imports allowed. None is.
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {}

# Module import cycles (strongly connected components of the module graph) allowed. None is.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()

HEAVY = frozenset(
    {"torch", "torchvision", "transformers", "pytorch_lightning", "lightning", "ray", "webdataset"}
)
"""Third-party packages whose import costs seconds or that the torch-free serving install does not have."""
LIGHT_MODULES = (
    "biomedgpt.cli",  # `biomedgpt --help` never imports torch
    "biomedgpt.run_config",  # "importing it never imports torch"
    "biomedgpt.tokenization",  # "importing this package never imports torch or transformers"
    "biomedgpt.model",  # lazy exports, so that `biomedgpt.model.run_config` stays light
    "biomedgpt.eval.metrics",  # pure Python and numpy, used by every serving path
    "biomedgpt.commands.shard",  # `biomedgpt shard --help` builds its parser from this module
    "biomedgpt.ingest.converters.cli",  # the --format options: "Importing this module imports nothing heavy"
)
"""Modules whose module-level import closure must hold no HEAVY package (and so must every serve module but one)."""
SERVE_TORCH_MODULES = frozenset({"biomedgpt.serve.torch_step"})
"""The PyTorch step model; imported only inside the torch engine's functions."""


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module."""
    target: str
    """The imported module (a `from pkg import name` that names a submodule counts as that submodule)."""
    line: int
    kind: str
    """"module", "function" (inside a def), "type-checking" or "dynamic" (a string naming a module)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert node.level == 0 and node.module, "relative imports are not used in biomedgpt"
    found = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
    return found if len(found) == len(node.names) else [node.module, *found]


@functools.cache
def imports_of(module: str) -> tuple[Import, ...]:
    """Every import of `module`, in source order, third-party ones included (target = the dotted name)."""
    known = modules()
    tree = ast.parse(known[module].read_text(encoding="utf-8"))
    found: list[Import] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function" if kind == "module" else kind)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                visit(child, "type-checking")
            else:
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    found.extend(Import(module, t, child.lineno, kind) for t in _targets(child, known))
                elif (
                    isinstance(child, ast.Constant) and isinstance(child.value, str) and child.value in known
                ):
                    found.append(Import(module, child.value, child.lineno, "dynamic"))
                visit(child, kind)

    visit(tree, "module")
    return tuple(found)


def internal_imports() -> list[Import]:
    return [i for m in modules() for i in imports_of(m) if i.target.split(".")[0] == "biomedgpt"]


def unit_of(module: str) -> str:
    if module in CONFIG_SECTIONS:
        return "config"
    if module == SCHEMA:
        return "schema"
    if any(module == m or module.startswith(m + ".") for m in METRICS):
        return "metrics"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _upward(imp: Import) -> bool:
    src, dst = unit_of(imp.module), unit_of(imp.target)
    return src != dst and LAYER_OF[dst] >= LAYER_OF[src]


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)
    return components


def module_cycles() -> list[set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in internal_imports():
        if imp.target != imp.module and imp.kind != "type-checking":
            graph[imp.module].add(imp.target)
    return _strongly_connected(graph)


def _module_level_closure(start: str) -> dict[str, list[str]]:
    """Every module imported at module level from `start`, transitively, with the path that reaches it; importing
    `a.b.c` also runs the `__init__` of `a` and `a.b`."""
    known = modules()
    paths: dict[str, list[str]] = {start: [start]}
    todo = [start]
    while todo:
        module = todo.pop()
        if module not in known:
            continue
        for imp in imports_of(module):
            if imp.kind != "module":
                continue
            parts = imp.target.split(".")
            for depth in range(1, len(parts) + 1):
                name = ".".join(parts[:depth])
                if name not in paths:
                    paths[name] = [*paths[module], name]
                    todo.append(name)
    return paths


# --- tests -------------------------------------------------------------------------------------------------
def test_every_unit_has_a_layer() -> None:
    units = {unit_of(m) for m in modules()}
    assert units <= set(LAYER_OF), f"put these in LAYERS: {sorted(units - set(LAYER_OF))}"
    assert not CONFIG_SECTIONS - set(modules()), sorted(CONFIG_SECTIONS - set(modules()))


def test_imports_follow_the_layer_order() -> None:
    violations = [
        f"{modules()[i.module].relative_to(PACKAGE.parent)}:{i.line}: {i.module} imports {i.target} ({i.kind}); "
        f"rule: {unit_of(i.module)} (layer {LAYER_OF[unit_of(i.module)]}) may import only lower layers, and "
        f"{unit_of(i.target)} is layer {LAYER_OF[unit_of(i.target)]}"
        for i in internal_imports()
        if _upward(i) and (i.module, unit_of(i.target)) not in UPWARD_EXCEPTIONS
    ]
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)


def test_known_upward_imports_still_exist() -> None:
    # An exception that no longer occurs is a fixed cycle: take it off the list so it cannot come back.
    present = {(i.module, unit_of(i.target)) for i in internal_imports() if _upward(i)}
    gone = sorted(set(UPWARD_EXCEPTIONS) - present)
    assert not gone, f"no longer imported, remove from UPWARD_EXCEPTIONS: {gone}"


def test_no_new_import_cycles() -> None:
    cycles = [frozenset(c) for c in module_cycles()]
    new = [
        f"{sorted(c)}, through: "
        + "; ".join(
            f"{i.module}:{i.line} -> {i.target}"
            for i in internal_imports()
            if i.module in c and i.target in c and i.module != i.target and i.kind != "type-checking"
        )
        for c in cycles
        if c not in KNOWN_CYCLES
    ]
    assert not new, "new import cycles (modules importing each other, directly or not):\n" + "\n".join(new)
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"these cycles changed or are gone; update KNOWN_CYCLES: {gone}"


def test_light_modules_import_no_torch() -> None:
    serve = [m for m in modules() if m.startswith("biomedgpt.serve.") and m not in SERVE_TORCH_MODULES]
    problems = []
    for start in (*LIGHT_MODULES, *serve):
        for name, path in _module_level_closure(start).items():
            if name.split(".")[0] in HEAVY:
                problems.append(f"{start} imports {name.split('.')[0]} at module level: {' -> '.join(path)}")
                break
    assert not problems, "\n".join(problems)


def test_torch_step_is_imported_only_inside_functions() -> None:
    # The one serve module that imports torch at module level may be reached only through a function call.
    for imp in internal_imports():
        if imp.target in SERVE_TORCH_MODULES and imp.module not in SERVE_TORCH_MODULES:
            assert imp.kind in ("function", "type-checking"), f"{imp.module}:{imp.line} imports {imp.target}"


def test_the_scan_sees_imports_of_every_kind() -> None:
    # Guards the scanner itself against silently finding nothing.
    kinds = {i.kind for i in internal_imports()}
    assert kinds == {"module", "function", "type-checking", "dynamic"}, kinds
    cli = {i.target for i in imports_of("biomedgpt.cli")}
    assert {"biomedgpt.commands.serve", "biomedgpt.commands.shard"} <= cli
    tasks = {i.target for i in imports_of("biomedgpt.tasks")}
    assert {"biomedgpt.tasks.vqa", "biomedgpt.tasks.base"} <= tasks


def test_the_rules_catch_an_upward_import_and_a_cycle() -> None:
    # Guards the rules themselves: with both lists empty, one wrong import or one cycle must fail.
    assert not UPWARD_EXCEPTIONS and not KNOWN_CYCLES
    assert _upward(Import("biomedgpt.tasks.vqa", "biomedgpt.data.pipeline", 1, "function"))
    assert _upward(Import("biomedgpt.ingest.converters.cli", "biomedgpt.commands.shard", 1, "function"))
    assert _upward(Import("biomedgpt.train.launch", "biomedgpt.serve.engines", 1, "function"))  # same layer
    assert not _upward(Import("biomedgpt.tasks.vqa", "biomedgpt.data.schema", 1, "module"))
    assert not _upward(Import("biomedgpt.serve.images", "biomedgpt.ingest.dicom", 1, "function"))
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(graph) == [{"a", "b", "c"}]
