# Two commands set everything up: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install images sandbox-setup demo lint test test-fast serve lock clean bench-channel bench-overhead

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

# Builds the sandbox images only when missing or stale; says clearly when no Docker engine runs.
images: install
	$(BIN)/evalgate images build

# Registers gVisor (runsc) with the local Docker engine; needs root and the runsc package.
sandbox-setup: install
	$(BIN)/evalgate sandbox setup

demo: images
	$(BIN)/evalgate demo

# Formatting, lint and types: part of every test run.
lint: install
	$(BIN)/ruff format --check service tests bench sandbox_images
	$(BIN)/ruff check service tests bench sandbox_images
	$(BIN)/mypy

# Two workers (pytest-xdist) for everything but the few tests that restart a shared service (dockerd,
# Redis, Postgres); those run afterwards, alone. Each test has its own queue, data dir and database.
test: lint images
	$(BIN)/pytest -n 2 -m "not serial"
	$(BIN)/pytest -m serial

# Without Docker, Redis or Postgres: lint and the unit tests only.
test-fast: lint
	$(BIN)/pytest -m "not docker and not redis and not postgres"

# Benchmarks print ratios against a baseline measured in the same run (see README, Performance).
bench-channel: images
	$(BIN)/python -m bench.inference_channel

bench-overhead: images
	$(BIN)/python -m bench.job_overhead --jobs 20

# The API under load (reads, a burst of submissions, jobs per minute) and a soak with worker kills.
.PHONY: bench-load bench-soak
bench-load: images
	$(BIN)/python -m bench.api_load

bench-soak: images
	$(BIN)/python -m bench.soak --minutes 30 --kill-every-min 5

serve: images
	$(BIN)/evalgate serve

lock: install
	$(BIN)/evalgate images lock

clean:
	rm -rf $(VENV) .evalgate .pytest_cache
