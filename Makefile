# `make train` and `make test` set everything up on first use (.venv, pinned packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test clean-venv

# MuJoCo renders headless through EGL (docs/envs.md); the first recipe line installs it where missing.
$(STAMP): pyproject.toml constraints.txt
	ldconfig -p | grep -q libEGL || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libegl1 libegl-mesa0 libgl1; }
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
