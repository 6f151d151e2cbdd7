"""The training-step benchmark runs (on the CPU here; the same code times the GPU on a device)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.slow
def test_segformer_step_is_timed_with_its_peak_memory(bench):
    seconds, peak_gib, precision = bench.time_steps(
        bench.CASES["segformer_b0"], crop=32, batch=2, warmup=1, iters=2
    )
    assert 0 < seconds < 60 and peak_gib > 0 and precision == "no"  # float32 on the CPU


def test_every_case_names_an_existing_recipe(bench):
    for case in bench.CASES.values():
        assert (BENCH.parents[1] / case.recipe).is_file(), case.recipe
