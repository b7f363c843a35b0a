# `make train` and `make test` set everything up on first use (.venv, pinned packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m dreamer.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

clean-venv:
	rm -rf $(VENV)
