"""Shared fixtures: small BiomedGPT models whose outputs actually depend on their inputs, the registry cache
the real-data tests read, and set-ups built once per run and shared by every pytest-xdist worker.

- `build_once(tmp_path_factory, name, build)`: a folder built by the first worker that asks for it, under a
  file lock in the run's base temp folder (the parent of each worker's own), and reused by the others. The
  costly session fixtures (the served model and its ONNX export) use it.
- `registry_cache`: every pinned registry source fetched and sha256-checked (`scripts/fetch_registry.py`,
  which `make test` runs first; the same `registry.fetch` that `make demo` uses). A fetch that fails is an
  error, never a skip.
- `gpu` tests (tests/gpu/) skip without CUDA and say so; nothing else skips for want of a machine.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist workers share the cores: each gets its share of intra-op threads (torch reads this when it is first
    # imported, after this file; the subprocesses a test starts inherit it) instead of one spinning per core each.
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
REPO = Path(__file__).resolve().parents[1]


def shared_tmp_root(tmp_path_factory) -> Path:
    """This run's base temp folder, the same for every xdist worker (each worker's own is a child of it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`<shared root>/shared/<name>/<name>`, made by `build(folder)` once per run, whichever worker asks first.

    The first caller builds under `<name>.lock` and marks the folder complete; later callers (other workers,
    other fixtures) wait on the lock and reuse it. Each build has a parent folder of its own (writers that
    stage a temporary sibling folder see only their own). A build that raised leaves no mark, so the next
    caller builds anew (and fails the same way, with its own traceback). Users must not change the folder:
    copy it first.
    """
    from filelock import FileLock

    root = shared_tmp_root(tmp_path_factory) / "shared"
    root.mkdir(parents=True, exist_ok=True)
    folder, done = root / name / name, root / f"{name}.complete"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder.parent, ignore_errors=True)
            folder.parent.mkdir()
            build(folder)
            done.touch()
    return folder


def _fetch_registry_module():
    spec = importlib.util.spec_from_file_location("fetch_registry", REPO / "scripts" / "fetch_registry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def registry_cache() -> Path:
    """The registry cache with every source of `registry.SOURCES` present and sha256-checked.

    `make test` fetched them already (then this is a hash per file); a bare `pytest` on a fresh clone fetches
    them here, once, under the cache's lock. Real-data tests take this fixture instead of skipping.
    """
    return _fetch_registry_module().fetch_all(quiet=True)


# xdist work units under `--dist loadgroup` (`make test`). Every test file is one unit (its module fixtures,
# servers included, are built once), tests with an `xdist_group` mark form that group's unit, and the tests that
# need a costly shared build form one unit per build: the worker that builds it goes on with them, and the other
# worker never waits idle on the build's lock. Workers know each test's fixtures, the controller only node ids:
# the workers write the map (node id -> unit) to $GROUPS_ENV during collection, and the controller's scheduler
# reads it. (pytest-xdist's own loadgroup renames `item._nodeid`, which pytest 9 no longer reads.)
SHARED_BUILD_GROUPS = {"exported_model_dir": "onnx-export"}
GROUPS_ENV = "BIOMEDGPT_TEST_XDIST_GROUPS"


def _loadgroup(config) -> bool:
    return getattr(config.option, "loadgroup", False) or getattr(config.option, "dist", "no") == "loadgroup"


def pytest_configure(config) -> None:
    if _loadgroup(config) and not os.environ.get("PYTEST_XDIST_WORKER"):
        import tempfile

        folder = tempfile.mkdtemp(prefix="biomedgpt-xdist-")
        config._biomedgpt_groups_dir = folder
        os.environ[GROUPS_ENV] = os.path.join(folder, "groups.json")  # the workers, started later, inherit it


def pytest_unconfigure(config) -> None:
    folder = getattr(config, "_biomedgpt_groups_dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(GROUPS_ENV, None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if not _loadgroup(config):
        return None
    import json

    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # every worker has collected (and written the map) before scheduling
                path = Path(os.environ.get(GROUPS_ENV, "/nonexistent"))
                self.groups = json.loads(path.read_text()) if path.is_file() else {}
            if nodeid in self.groups:
                return self.groups[nodeid]
            if nodeid.rfind("@") > nodeid.rfind("]"):  # an older pytest with xdist's own suffix
                return nodeid.rsplit("@", 1)[1]
            return nodeid.split("::")[0]

    return UnitScheduling(config, log)


def _write_groups(items) -> None:
    import json

    groups = {}
    for item in items:
        marks = [
            m.args[0] if m.args else m.kwargs.get("name", "default") for m in item.iter_markers("xdist_group")
        ]
        shared = [group for name, group in SHARED_BUILD_GROUPS.items() if name in item.fixturenames]
        if marks or shared:
            groups[item.nodeid] = "_".join(sorted(map(str, marks))) if marks else shared[0]
    path = Path(os.environ[GROUPS_ENV])
    part = path.with_name(f"{path.name}.{os.getpid()}")
    part.write_text(json.dumps(groups))
    part.replace(path)  # both workers write the same map


# tryfirst: xdist's own hook renames items of `xdist_group` marks (on an older pytest): the map uses plain ids.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Writes the xdist unit map (above) on workers; `gpu` tests skip where CUDA is missing, saying so."""
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(GROUPS_ENV):
        _write_groups(items)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="gpu test: needs CUDA, and torch.cuda.is_available() is False here (no GPU or a CPU-only torch)"
    )
    for item in gpu_items:
        item.add_marker(skip)


def lively_model(
    arch: str = "tiny",
    *,
    vocab_size: int = 300,
    image_size: int = 64,
    seed: int = 0,
    init_std: float = 0.3,
    **overrides,
):
    """A randomly initialized model with larger weights and non-zero relative-position tables.

    Freshly initialized models give near-constant outputs and zero relative biases, which would let bugs in
    caching, masking or position handling pass unnoticed; this one does not.
    """
    import torch

    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    torch.manual_seed(seed)
    config = BiomedGPTConfig.from_arch(
        arch, vocab_size=vocab_size, image_size=image_size, init_std=init_std, **overrides
    )
    model = BiomedGPTForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "rel_pos_table" in name:
                param.normal_(0.0, 0.5)
            elif "c_attn" in name:
                param.uniform_(0.5, 1.5)
        model.model.shared.weight[config.eos_token_id] *= 2.5  # makes eos a frequent, varied outcome
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    return lively_model("tiny")


def write_served_model(directory, *, seed: int = 0):
    """A model folder the serving engines load: a lively tiny model with the real tokenizer (32,768 ids), its
    processor, `serving.json` and `answers.json` (closed-set answers, as `biomedgpt export` writes them)."""
    import json
    from pathlib import Path

    from biomedgpt.model.image_processing import BiomedGPTImageProcessor, ImageProcessorConfig
    from biomedgpt.model.processing import BiomedGPTProcessor
    from biomedgpt.tokenization.unified import BiomedGPTTokenizer

    directory = Path(directory)
    model = lively_model("tiny", vocab_size=32768, image_size=64, seed=seed)
    model.save_pretrained(directory)
    BiomedGPTProcessor(
        BiomedGPTTokenizer.load_default(), BiomedGPTImageProcessor(ImageProcessorConfig(image_size=64))
    ).save_pretrained(directory)
    (directory / "serving.json").write_text(
        json.dumps({"model_id": "biomedgpt-test", "generation": {"max_new_tokens": 16}})
    )
    (directory / "answers.json").write_text(
        json.dumps({"vqa": ["yes", "no", "left lung"], "classification": ["normal", "pneumonia", "effusion"]})
    )
    return directory


@pytest.fixture(scope="session")
def served_model_dir(tmp_path_factory):
    """A torch model folder for `biomedgpt serve --engine torch` and the engine tests (one per run, shared by
    the xdist workers; tests copy it before changing anything in it)."""
    return build_once(tmp_path_factory, "served-model", write_served_model)


@pytest.fixture(scope="session")
def exported_model_dir(served_model_dir, tmp_path_factory):
    """`served_model_dir` exported to ONNX (fp32): the folder `biomedgpt serve` loads with ONNX Runtime (one
    export per run, shared by the xdist workers)."""
    from biomedgpt.export.onnx_export import export_checkpoint

    def export(out: Path) -> None:
        export_checkpoint(served_model_dir, out)

    return build_once(tmp_path_factory, "model-onnx", export)
