# Quick start:  make demo   (set up, train a tiny net, analyse its checkpoints, write a report)
#               make test   (set up, run the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-all bench clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/spectralens demo --out spectralens-demo

test: setup
	$(PY) -m pytest -q -n 2

test-all: setup
	$(PY) -m pytest -q -n 2 -m "slow or not slow"

clean:
	rm -rf $(VENV) spectralens-demo .pytest_cache
