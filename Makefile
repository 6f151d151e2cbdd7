# The two README quickstart commands: `make quickstart` and `make test`; `make test-fast` runs the
# fast tier (no Slurm, no servers, nothing marked slow). `make bench` runs every benchmark and
# prints one table (figures beside references measured in the same run); `make bench-quick` is
# its smoke run (tiny sizes, under a minute). BENCH_ARGS passes options, e.g.
# `make bench BENCH_ARGS="--threads 1 --json bench.json"` (see `python -m benchmarks --help`).
VENV ?= .venv
PY := $(VENV)/bin/python
SEGCTL := $(VENV)/bin/segctl

.PHONY: setup quickstart test test-fast bench bench-quick

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

bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)

bench-quick: setup
	$(PY) -m benchmarks --quick $(BENCH_ARGS)
