"""serving/: the container files and the API entrypoint, checked without building an image.

- api.Dockerfile installs the `serve` extra alone, and that extra's whole dependency closure (walked through the
  installed distributions' metadata, extras and markers honoured) holds no torch, CUDA or Ray package.
- train.Dockerfile pins its CUDA base image, Python 3.11, and the torch and Ray of requirements/constraints.txt.
- api-entrypoint.sh really runs: a mounted model is served as it is; an empty folder is filled from
  BIOMEDGPT_MODEL_URL only when the sha256 matches; then it execs `biomedgpt serve`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
SERVING = REPO / "serving"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# Packages that mean "the training stack came along": torch and its CUDA wheels, Ray, Lightning, transformers.
HEAVY = re.compile(
    r"^(torch|torchvision|triton|nvidia-.*|cuda-.*|ray|pytorch-lightning|lightning|transformers)$"
)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in dockerfile.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (m.group(1).upper(), m.group(2).strip())
        for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.MULTILINE)
    ]


def constraint_version(package: str) -> str:
    text = (REPO / "requirements" / "constraints.txt").read_text(encoding="utf-8")
    return re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE | re.IGNORECASE).group(1)


def install_lines(dockerfile: Path) -> list[str]:
    return [args for op, args in instructions(dockerfile) if op == "RUN" and " install " in f" {args} "]


def final_user(dockerfile: Path) -> str:
    return [args for op, args in instructions(dockerfile) if op == "USER"][-1]


# --- the API image --------------------------------------------------------------------------------------


def test_api_image_installs_only_the_serve_extra_against_the_constraints():
    dockerfile = SERVING / "api.Dockerfile"
    (line,) = [line for line in install_lines(dockerfile) if "pip install" in line]
    assert "-c requirements/constraints.txt" in line
    assert re.findall(r"\.\[([^\]]*)\]", line) == ["serve"], line
    assert not [args for _, args in instructions(dockerfile) if "torch" in args.lower()]


def test_api_image_runs_the_entrypoint_as_a_numeric_non_root_user_on_every_interface():
    ops = instructions(SERVING / "api.Dockerfile")
    base = next(args for op, args in ops if op == "FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    user = final_user(SERVING / "api.Dockerfile").split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric, so Kubernetes can verify runAsNonRoot"
    env = " ".join(args for op, args in ops if op == "ENV")
    assert "BIOMEDGPT_SERVE_HOST=0.0.0.0" in env and "BIOMEDGPT_SERVE_MODEL=/models/biomedgpt" in env
    assert next(args for op, args in ops if op == "ENTRYPOINT") == '["/usr/local/bin/api-entrypoint.sh"]'


def serve_closure(extra: str) -> set[str]:
    """Every distribution `pip install ".[extra]"` installs, from the installed distributions' metadata."""
    todo = [Requirement(r) for r in [*PYPROJECT["dependencies"], *PYPROJECT["optional-dependencies"][extra]]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "biomedgpt":  # a self-reference such as biomedgpt[serve] in the demo extra
            todo += [Requirement(r) for e in req.extras for r in PYPROJECT["optional-dependencies"][e]]
            continue
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} (needed by .[{extra}]) is not installed: install .[all] to walk the closure")
        for text in requires:
            dep = Requirement(text)
            # A dependency counts when its marker holds for the base install or one of the requested extras.
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in ["", *req.extras]):
                todo.append(dep)
    return {name for name, _ in seen}


def test_the_serve_extra_pulls_in_no_torch_cuda_or_ray():
    closure = serve_closure("serve")
    assert {"onnxruntime", "fastapi", "uvicorn", "numpy"} <= closure
    assert not {name for name in closure if HEAVY.match(name)}, sorted(closure)


def test_the_closure_walk_does_find_torch_where_it_is():
    assert "torch" in serve_closure("model") and "ray" in serve_closure("train")


# --- the training image ---------------------------------------------------------------------------------


def test_train_image_pins_cuda_python_torch_and_ray():
    dockerfile = SERVING / "train.Dockerfile"
    ops = instructions(dockerfile)
    bases = [args.split()[0] for op, args in ops if op == "FROM"]
    assert any(re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-[\w.-]+", b) for b in bases), bases
    assert all(":" in b and not b.endswith(":latest") for b in bases), bases
    assert re.search(r"PYTHON_VERSION=3\.11\.\d+", " ".join(args for op, args in ops if op == "ARG"))
    (line,) = install_lines(dockerfile)[-1:]
    assert "-c requirements/constraints.txt" in line and '".[train]"' in line
    assert f'"torch=={constraint_version("torch")}"' in line
    assert re.search(rf'"ray\[[\w,]+\]=={re.escape(constraint_version("ray"))}"', line), line
    assert final_user(dockerfile).split(":")[0] not in ("0", "root")


# --- the API entrypoint -----------------------------------------------------------------------------------


def model_tarball(tmp_path: Path, *, top_folder: bool) -> tuple[str, str]:
    """A tar.gz of a fake export folder -> (file:// URL, sha256)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {"model.onnx": b"onnx", "config.json": b"{}"}.items():
            info = tarfile.TarInfo(f"export/{name}" if top_folder else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "model.tar.gz"
    path.write_bytes(buffer.getvalue())
    return path.as_uri(), hashlib.sha256(buffer.getvalue()).hexdigest()


def run_entrypoint(tmp_path: Path, model_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run api-entrypoint.sh with a stand-in `biomedgpt` that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "biomedgpt"
    fake.write_text('#!/bin/sh\necho "biomedgpt $*"\n')
    fake.chmod(0o755)
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    environ = {"PATH": path, "BIOMEDGPT_SERVE_MODEL": str(model_dir), **env}
    return subprocess.run(
        ["sh", str(SERVING / "api-entrypoint.sh"), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


pytestmark_shell = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sh", "tar", "sha256sum")), reason="needs sh, tar, sha256sum"
)


@pytestmark_shell
def test_a_mounted_model_is_served_as_it_is(tmp_path):
    model_dir = tmp_path / "models" / "biomedgpt"
    model_dir.mkdir(parents=True)
    (model_dir / "model.onnx").write_bytes(b"mounted")
    out = run_entrypoint(tmp_path, model_dir, "--port", "9000")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"biomedgpt serve --model {model_dir} --port 9000"


@pytestmark_shell
@pytest.mark.parametrize("top_folder", [True, False])
def test_an_empty_model_folder_is_filled_from_the_url_when_the_sha256_matches(tmp_path, top_folder):
    url, sha = model_tarball(tmp_path, top_folder=top_folder)
    model_dir = tmp_path / "models" / "biomedgpt"
    out = run_entrypoint(tmp_path, model_dir, BIOMEDGPT_MODEL_URL=url, BIOMEDGPT_MODEL_SHA256=sha.upper())
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.onnx"]
    assert out.stdout.strip() == f"biomedgpt serve --model {model_dir}"


@pytestmark_shell
def test_a_wrong_sha256_serves_nothing_and_leaves_the_folder_empty(tmp_path):
    url, _ = model_tarball(tmp_path, top_folder=False)
    model_dir = tmp_path / "models" / "biomedgpt"
    out = run_entrypoint(tmp_path, model_dir, BIOMEDGPT_MODEL_URL=url, BIOMEDGPT_MODEL_SHA256="0" * 64)
    assert out.returncode != 0 and "sha256 mismatch" in out.stderr
    assert "biomedgpt serve" not in out.stdout
    assert list(model_dir.iterdir()) == []


@pytestmark_shell
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "BIOMEDGPT_MODEL_URL is not set"),
        ({"BIOMEDGPT_MODEL_URL": "file:///x.tar.gz"}, "BIOMEDGPT_MODEL_SHA256 is not"),
    ],
)
def test_an_empty_model_folder_without_a_verified_url_is_an_error(tmp_path, env, message):
    out = run_entrypoint(tmp_path, tmp_path / "models" / "biomedgpt", **env)
    assert out.returncode != 0 and message in out.stderr and "biomedgpt serve" not in out.stdout


def test_the_entrypoint_execs_an_existing_serve_subcommand():
    from biomedgpt.cli import COMMANDS

    script = (SERVING / "api-entrypoint.sh").read_text(encoding="utf-8")
    assert re.search(r"^exec biomedgpt serve ", script, re.MULTILINE)
    assert "serve" in COMMANDS, "`biomedgpt serve` is not in biomedgpt.cli.COMMANDS"
