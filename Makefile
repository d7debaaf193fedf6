# DeskLedger — `make run` (the main job) and `make test` (everything CI checks).
# uv builds .venv from the committed uv.lock. The `uv` on PATH when there is one; otherwise it is
# bootstrapped into build/uv-venv, a virtualenv of its own: a stock Debian or Ubuntu python3
# refuses `pip install` into itself (PEP 668, "externally managed environment"), and the system
# Python is never touched.

SHELL := /bin/bash
PYTHON ?= python3
UV_BOOTSTRAP := build/uv-venv
# the uv the bootstrap installs: the one deploy/Dockerfile pins
UV_VERSION := 0.13.9
UV ?= $(or $(shell command -v uv 2>/dev/null),$(UV_BOOTSTRAP)/bin/uv)
RUN := $(UV) run --frozen
SRC := services shared

.DEFAULT_GOAL := help

.PHONY: help install run demo test lint fmt typecheck pytest bench chaos up down clean services

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

$(UV_BOOTSTRAP)/bin/uv:
	@echo "uv is not on PATH: installing it into $(UV_BOOTSTRAP) (needs python3-venv on Debian/Ubuntu)"
	$(PYTHON) -m venv $(UV_BOOTSTRAP)
	$(UV_BOOTSTRAP)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

install: .venv/.installed ## create .venv with the project and its tools (uv, from uv.lock)

run: install ## migrate, then run ingress + one worker in the foreground (Ctrl-C stops both)
	@bash .ci/services-hint
	$(RUN) python -m services.local

demo: install ## in a second terminal while `make run` runs: post the fixture story, show the ticket
	$(RUN) python -m services.demo

lint: install ## ruff lint and format check; the alert rules with promtool where it is installed
	$(RUN) ruff check $(SRC) tests
	$(RUN) ruff format --check $(SRC) tests
	@if command -v promtool >/dev/null; then \
		promtool check rules deploy/observability/alerts.yaml && \
		promtool check config --syntax-only deploy/observability/prometheus.yml; \
	else echo "promtool not installed (Debian: apt-get install prometheus): alert rules not checked"; fi

fmt: install ## format and autofix
	$(RUN) ruff format $(SRC) tests
	$(RUN) ruff check --fix $(SRC) tests

typecheck: install ## mypy --strict on services/ and shared/
	$(RUN) mypy

pytest: install ## the test suite only
	$(RUN) pytest -m "not slow"

test: lint typecheck pytest ## lint, type-check, then the whole test suite (real PostgreSQL and RabbitMQ)

bench: install ## the benchmark suite: ratios against baselines measured in the same run
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(RUN) python -m tests.benchmarks

services: ## start the local PostgreSQL and RabbitMQ when they are down (CI machines)
	@bash .ci/services

clean: ## remove the virtualenv, caches and build output
	rm -rf .venv build .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

-include deploy/deploy.mk
-include tests/faults/chaos.mk
