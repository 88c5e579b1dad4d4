# LearnTrack developer commands. `make` or `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LT := $(BIN)/learntrack
# The JDK (not only the JRE): the Neo4j launcher runs as `java Launcher.java`.
# maven: resolves Kafka, Cassandra, Neo4j and Spark's Kafka connector (stack fetch).
APT_PACKAGES := redis-server openjdk-17-jdk-headless maven chromium
STAMP := $(VENV)/.installed

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

setup: $(STAMP) ## Install what is missing: apt packages, .venv, pinned packages, JVM jars (idempotent)
	@$(LT) stack fetch

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[local,dev]'
	@touch $(STAMP)

up: setup ## Start the local stack (add ARGS=--spark-cluster for a Spark cluster)
	$(LT) stack up $(ARGS)

down: ## Stop the local stack cleanly (data is kept in .learntrack/)
	@if [ -x $(LT) ]; then $(LT) stack down; else echo "nothing to stop"; fi

status: setup ## Show the local stack's servers
	$(LT) stack status

DEMO_DIR := .learntrack/demo

demo: setup ## Start the stack, run the pipeline on synthetic data, show the result
	$(LT) stack up
	$(LT) stack check
	$(LT) topics reset --yes       # the demo starts from a clean slate
	$(LT) generate --students 2000 --courses 20 --events 200000 --bad-ratio 0.005 \
	  --out-of-order 2m --truth $(DEMO_DIR)/truth.json
	$(LT) stream --available-now --reset
	$(LT) verify --truth $(DEMO_DIR)/truth.json
	$(LT) summary
	$(LT) eval fraud --truth $(DEMO_DIR)/truth.json
	$(LT) query multi-region --window 30m --limit 10
	$(LT) batch --yesterday        # the generated day, lake -> Cassandra
	$(LT) query courses            # that day's course engagement, from Cassandra
	@echo
	@echo "Explore further:"
	@echo "  $(LT) stream                  # keep streaming (Ctrl-C stops cleanly)"
	@echo "  $(LT) generate --duration 60s --rate 5000   # live load, in another shell"
	@echo "  $(LT) summary                 # top students, events, dead letters"
	@echo "  $(LT) stack status            # servers, versions, memory"
	@echo "  less $(DEMO_DIR)/truth.json   # what every store must end up with"
	@echo
	@echo "The dashboard (the same panels as grafana/) is served until Ctrl-C; make down stops the stack."
	$(LT) api --dashboard-key

lint: setup ## ruff (lint + format check) and mypy
	$(BIN)/ruff check learntrack bench tests
	$(BIN)/ruff format --check learntrack bench tests
	$(BIN)/mypy

format: setup ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix learntrack bench tests
	$(BIN)/ruff format learntrack bench tests

test: setup lint ## Run the full test suite against a real local stack
	$(BIN)/pytest $(PYTEST_ARGS)

FAULT_TESTS = tests/test_crash.py tests/test_outages.py tests/test_bad_input.py \
	tests/test_security.py

soak: setup ## The long fault-injection runs (kill -9 during 200k events; docs/reliability.md)
	LEARNTRACK_SOAK=1 $(BIN)/pytest $(FAULT_TESTS) $(PYTEST_ARGS)

nightly: setup ## The nightly batch: yesterday's lake -> Cassandra (re-run a day: learntrack batch --date D)
	$(LT) batch --yesterday

bench: setup ## Benchmarks, ~1 h (writes docs/benchmarks.md); BENCH_ARGS=--quick: under 5 min, to .learntrack/bench/quick
	$(LT) bench $(BENCH_ARGS)

clean: down ## Stop the stack and delete all local state (.learntrack*)
	rm -rf .learntrack .learntrack-test*

.PHONY: help setup up down status demo lint format test soak nightly bench clean
