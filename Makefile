# The two set-up commands of the README. Both create .venv and install the pinned environment first.
.PHONY: demo test lint bench bootstrap

VENV ?= .venv
BIN := $(VENV)/bin

bootstrap:
	@bash scripts/bootstrap.sh

## The whole product on its embedded default: demo corpus -> train (or reuse) -> evaluate -> export -> API + demo
## on 127.0.0.1 (URLs printed). `make demo CI=1` runs the same path, checks it through both servers and exits.
demo: bootstrap
	@bash scripts/demo.sh $(if $(CI),--ci,)

## The whole test suite after a lint check: unit + integration on the CPU, real registry data included (fetched
## once into .cache/registry, sha256-checked, as `make demo` does: scripts/fetch_registry.py), the browser test
## on Debian's chromium (scripts/install-chromium.sh, once), run on $(PYTEST_WORKERS) pytest-xdist workers, a
## test file per worker at a time (its module fixtures, servers included, are built once; the tests on the shared
## ONNX export form one unit: tests/conftest.py). The GPU tests (tests/gpu/, marker `gpu`: bf16 training on
## CUDA, ONNX Runtime CUDA parity) run where CUDA is present and skip, saying so, elsewhere.
## PYTEST_WORKERS=auto uses every core, 0 one process; PYTEST_ARGS adds pytest options.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
test: bootstrap
	$(BIN)/ruff check biomedgpt tests benchmarks
	@bash scripts/install-chromium.sh
	$(BIN)/python scripts/fetch_registry.py
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=20 $(PYTEST_ARGS)

lint: bootstrap
	$(BIN)/ruff check biomedgpt tests benchmarks
	$(BIN)/ruff format --check biomedgpt tests benchmarks

bench: bootstrap
	$(BIN)/python benchmarks/bench_generate.py --arch small --batch 1 8
