# The two set-up commands of the README. Both create .venv and install the pinned environment first.
.PHONY: demo test lint bench bootstrap

VENV ?= .venv
BIN := $(VENV)/bin

bootstrap:
	@bash scripts/bootstrap.sh

## The main job on its embedded default: demo corpus -> model chain -> train the demo model -> evaluate.
demo: bootstrap
	@bash scripts/demo.sh

## The whole test suite (unit + integration; GPU tests skip without CUDA), after a lint check.
test: bootstrap
	$(BIN)/ruff check biomedgpt tests benchmarks
	$(BIN)/python -m pytest -q

lint: bootstrap
	$(BIN)/ruff check biomedgpt tests benchmarks
	$(BIN)/ruff format --check biomedgpt tests benchmarks

bench: bootstrap
	$(BIN)/python benchmarks/bench_generate.py --arch small --batch 1 8
