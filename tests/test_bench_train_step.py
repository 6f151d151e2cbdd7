"""The training-step benchmark runs (on the CPU here; the same code times the GPU on a device)."""

from __future__ import annotations

import pytest

from benchmarks import bench_train_step as bench


@pytest.mark.slow
def test_segformer_step_is_timed_with_its_peak_memory():
    timing = bench.time_case(bench.CASES["segformer_b0"], crop=32, batch=2, warmup=1, iters=2,
                             core=None)
    assert 0 < timing.seconds_per_iter < 60 and timing.peak_memory_gib > 0
    assert timing.precision == "no" and timing.crop == (32, 32)  # float32 on the CPU


def test_configure_callback_sets_every_dcnv3_core():
    import torch

    from trainer.models.dcnv3 import DCNv3, dcnv3_core_grid_sample

    model = torch.nn.Sequential(DCNv3(channels=16, group=2), DCNv3(channels=16, group=2))
    bench.use_core(dcnv3_core_grid_sample)(model)
    assert all(m.core is dcnv3_core_grid_sample for m in model)
    assert bench.use_core(None) is None  # the model's default core


def test_every_case_names_an_existing_recipe():
    for case in bench.CASES.values():
        assert (bench.ROOT / case.recipe).is_file(), case.recipe
