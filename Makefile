# `make train` and `make test` set everything up on first use (.venv, pinned packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test clean-venv

# System packages, installed only where missing: EGL for headless MuJoCo rendering
# (docs/envs.md); a C++ compiler and Python's headers for torch.compile on CPU (the tiny preset).
APT_NEEDS = $(shell ldconfig -p | grep -q libEGL || echo libegl1 libegl-mesa0 libgl1) \
	$(shell command -v g++ >/dev/null || echo g++) \
	$(shell $(PYTHON) -c "import os, sys, sysconfig; os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')) or print(f'python{sys.version_info[0]}.{sys.version_info[1]}-dev')")

$(STAMP): pyproject.toml constraints.txt
	$(if $(strip $(APT_NEEDS)),SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(strip $(APT_NEEDS)))
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
