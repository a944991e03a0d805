# Every target creates the virtual environment first; torch is pinned to the CPU build
# because an unpinned torch pulls a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench zoo fixtures clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

fixtures: $(STAMP)
	$(BIN)/python fixtures/make_fixtures.py
	$(BIN)/python fixtures/make_keras_fixtures.py
	$(BIN)/python fixtures/make_tf_fixtures.py
	$(BIN)/python fixtures/make_export_forms.py

demo: $(STAMP)
	BIN=$(BIN) bash fixtures/demo.sh

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/seed_suite.py

zoo: $(STAMP)
	$(BIN)/python bench/zoo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
