# eocap: `make demo` and `make test` are all a newcomer needs. Every install step lives here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is rebuilt only when the dependency files change; a second `make demo` reuses it.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
CODE := $(wildcard pipeline flows validation trainer tests benchmarks)

.PHONY: install demo test lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,models,train]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/eocap demo

# The whole suite. .ci/services.sh first provides PostgreSQL, Chromium and docker-compose (apt
# the first time, a quick check later); a test whose service is missing fails naming the fix.
# EOCAP_TEST_SKIP_SERVICES=1 skips those tests instead; -rfEs lists every skip (tests/conftest.py
# fails a run that skipped without that opt-out). A subset: `make test PYTEST_ARGS="-k review"`.
test: install
	bash -c '. .ci/services.sh && exec $(BIN)/python -m pytest -rfEs $(PYTEST_ARGS)'

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy pipeline flows validation trainer
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix $(CODE)
	$(BIN)/ruff format $(CODE)

clean:
	rm -rf output demo-data .pytest_cache .mypy_cache .ruff_cache
