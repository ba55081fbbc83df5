# `make` alone lists the targets. Every target creates the virtualenv it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run demo test fuzz lint typecheck bench bench-peers bench-targets sim docs check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install meshnode with its test extras

LISTEN ?=
LISTEN_FLAG = $(if $(LISTEN),--listen $(LISTEN))
CLI_HINT = $(if $(MESHNODE_HOME),MESHNODE_HOME=$(MESHNODE_HOME) )$(BIN)/meshnode

run: $(STAMP)  ## run a node in the foreground, initialised on first use (LISTEN=host:port)
	@$(BIN)/meshnode init --if-missing $(LISTEN_FLAG) > /dev/null
	@$(BIN)/meshnode id
	@echo
	@echo "Starting the daemon in the foreground (Ctrl-C stops it). In another terminal:"
	@echo "  $(CLI_HINT) channel create NAME     create a channel"
	@echo "  $(CLI_HINT) channel invite NAME     a code for another group's 'channel join CODE'"
	@echo "  $(CLI_HINT) post NAME \"TEXT\"        post a bulletin; 'read' shows what arrived"
	@echo
	@exec $(BIN)/meshnode daemon $(LISTEN_FLAG)

demo: $(STAMP)  ## three daemons on loopback: a channel, invites, posts, what each group sees
	$(BIN)/python -m meshnode.demo

test: $(STAMP)  ## run every required test
	$(BIN)/python -m pytest -q -p no:cacheprovider

FUZZ_COUNT ?= 100000
FUZZ_SEED  ?= meshnode

fuzz: $(STAMP)  ## feed every decoder 100,000 mutated and random inputs (~8 min; FUZZ_COUNT, FUZZ_SEED)
	$(BIN)/python -m tests.fuzz --count $(FUZZ_COUNT) --seed $(FUZZ_SEED)

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check meshnode tests bench sim
	$(BIN)/mypy

typecheck: $(STAMP)  ## mypy only
	$(BIN)/mypy

bench: $(STAMP)  ## print the benchmark figures
	$(BIN)/python bench/core.py
	$(BIN)/python bench/dht.py
	$(BIN)/python bench/mesh.py

# bench-peers: meshnode beside py-libp2p and js-libp2p, each in a folder of its own
# (neither is a dependency of meshnode). QUICK=1 runs the smaller sweep.
BENCH_STAMP  := $(VENV)/.installed-bench
PEERS        := bench/peers
LIBP2P_VENV  := $(PEERS)/.venv-libp2p
LIBP2P_STAMP := $(LIBP2P_VENV)/.installed
JS_STAMP     := $(PEERS)/js/node_modules/.installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

$(LIBP2P_STAMP): $(PEERS)/requirements-libp2p.txt
	$(PYTHON) -m venv $(LIBP2P_VENV)
	$(LIBP2P_VENV)/bin/pip install --quiet --upgrade pip
	$(LIBP2P_VENV)/bin/pip install --quiet -r $(PEERS)/requirements-libp2p.txt
	touch $(LIBP2P_STAMP)

$(JS_STAMP): $(PEERS)/js/package.json $(PEERS)/js/package-lock.json
	cd $(PEERS)/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

bench-peers: $(BENCH_STAMP) $(LIBP2P_STAMP) $(JS_STAMP)  ## meshnode beside py-libp2p and js-libp2p GossipSub (~10 min; QUICK=1 ~2)
	$(BIN)/python $(PEERS)/run.py $(if $(QUICK),--quick)

bench-targets: $(STAMP)  ## every target of issue 13 measured in one run, met or not (2-4 min; QUICK=1 ~1)
	$(BIN)/python bench/targets.py $(if $(QUICK),--quick)

sim: $(BENCH_STAMP)  ## simulate 100 to 10,000 nodes, churn and 3,000 adversaries (~3 min; QUICK=1 ~1)
	$(BIN)/python -m sim $(if $(QUICK),--quick)

docs: $(STAMP)  ## regenerate docs/cli.md from the commands' --help
	$(BIN)/python -c "from meshnode.cli import render_docs; print(render_docs())" > docs/cli.md

check: lint test  ## what CI runs

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(LIBP2P_VENV) $(PEERS)/js/node_modules
