# The two README quickstart commands: `make quickstart` and `make test`; `make test-fast` runs the
# fast tier (no Slurm, no servers, nothing marked slow).
VENV ?= .venv
PY := $(VENV)/bin/python
SEGCTL := $(VENV)/bin/segctl

.PHONY: setup quickstart test test-fast

setup: $(VENV)/.installed

# constraints.txt pins the CPU build of torch (an unpinned torch pulls GBs of CUDA wheels).
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

quickstart: setup
	$(SEGCTL) data synthesize data/quickstart
	$(SEGCTL) submit recipes/quickstart.yaml --wait
	$(SEGCTL) status

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slurm and not server and not slow"
