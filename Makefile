# `make install` creates .venv with everything; `make test` installs if needed and runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test demo clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	# retinaface-pytorch 0.0.8 pins torch 1.9, which cannot be resolved beside modern torch:
	# it is installed without its dependencies and imported lazily (see fercli/align).
	$(PIP) install -q --no-deps retinaface-pytorch==0.0.8
	touch $@

# The suite on up to 4 pytest-xdist workers, a test file per worker (its module fixtures built once), torch on
# one thread each (tests/conftest.py); --durations lists the slowest, to keep the suite under 5 minutes.
test: install
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations=10

# The whole pipeline on the embedded synthetic sample, in a fresh workspace: runs/demo/report.md
demo: install
	$(VENV)/bin/fer demo --out runs/demo --overwrite

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
