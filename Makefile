# `make` alone lists the targets. Every target creates the virtualenv it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck bench docs check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install meshnode with its test extras

run: $(STAMP)  ## start a node on embedded defaults (data in $$MESHNODE_HOME or the XDG data dir)
	$(BIN)/meshnode init --if-missing
	$(BIN)/meshnode id

test: $(STAMP)  ## run every required test
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check meshnode tests bench
	$(BIN)/mypy

typecheck: $(STAMP)  ## mypy only
	$(BIN)/mypy

bench: $(STAMP)  ## print the benchmark figures
	$(BIN)/python bench/core.py
	$(BIN)/python bench/dht.py

docs: $(STAMP)  ## regenerate docs/cli.md from the commands' --help
	$(BIN)/python -c "from meshnode.cli import render_docs; print(render_docs())" > docs/cli.md

check: lint test  ## what CI runs

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
