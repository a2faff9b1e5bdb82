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

## The whole test suite (unit + integration, all on the CPU; there are no GPU tests), after a lint check.
test: bootstrap
	$(BIN)/ruff check biomedgpt tests benchmarks
	$(BIN)/python -m pytest -q

lint: bootstrap
	$(BIN)/ruff check biomedgpt tests benchmarks
	$(BIN)/ruff format --check biomedgpt tests benchmarks

bench: bootstrap
	$(BIN)/python benchmarks/bench_generate.py --arch small --batch 1 8
