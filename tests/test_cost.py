"""Measured step times and the cost estimate of a plan (segctl.cost)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl import cost
from segctl.cli import app
from segctl.recipe import load_recipe
from tests.trainer_runs import frame_job_yaml

REPO = Path(__file__).resolve().parents[1]


def _measurement(key: str, device: str, seconds: float, at: str, peak: float = 10.0,
                 gpu_memory: float | None = 80.0) -> cost.Measurement:
    return cost.Measurement(step_key=key, recipe="r", device=device, gpu_memory_gib=gpu_memory,
                            seconds_per_iter=seconds, peak_memory_gib=peak, precision="bf16",
                            batch=1, crop=(512, 512), iters=5, threads=8, measured_at=at)


def test_measurements_are_kept_one_per_step_and_device(tmp_path):
    cost.record_measurement(tmp_path, _measurement("k", "cuda H100", 0.5, "2026-01-01T00:00:00Z"))
    cost.record_measurement(tmp_path, _measurement("k", "cpu", 9.0, "2026-01-01T00:00:00Z", gpu_memory=None))
    cost.record_measurement(tmp_path, _measurement("k", "cuda H100", 0.4, "2026-01-02T00:00:00Z"))
    kept = {(m.device, m.seconds_per_iter) for m in cost.read_measurements(tmp_path)}
    assert kept == {("cuda H100", 0.4), ("cpu", 9.0)}
    (tmp_path / cost.BENCH_FILE).write_text("not json")
    assert cost.read_measurements(tmp_path) == []


def test_the_step_key_follows_the_step_not_the_schedule():
    path = REPO / "recipes" / "quickstart.yaml"
    base = cost.step_key(load_recipe(path).recipe)
    assert cost.step_key(load_recipe(path, ["schedule.max_iters=1000"]).recipe) == base
    assert cost.step_key(load_recipe(path, ["train.batch_size=8"]).recipe) != base
    assert cost.step_key(load_recipe(path, ["data.crop_size=[64, 64]"]).recipe) != base


def test_a_measured_figure_comes_first_and_is_scaled_by_accumulation():
    found = [_measurement("k", "cuda H100", 0.5, "2026-01-01T00:00:00Z"),
             _measurement("k", "cuda H200", 0.3, "2026-02-01T00:00:00Z"),
             _measurement("other", "cuda H100", 9.0, "2026-03-01T00:00:00Z")]
    est = cost.estimate(key="k", max_iters=1000, grad_accum_steps=2, gpus=8, local_device=None,
                        measurements=found, published_seconds_per_iter=0.9)
    assert est.seconds_per_iter == pytest.approx(0.6)  # the latest GPU figure, x 2
    assert est.wall_seconds == pytest.approx(600.0)
    assert est.gpu_hours == pytest.approx(600.0 * 8 / 3600)
    assert "cuda H200" in est.basis and "x 2 accumulation" in est.basis
    assert est.warnings == ()


def test_the_published_log_is_the_fallback_and_a_local_job_wants_this_device():
    found = [_measurement("k", "cuda H100", 0.5, "2026-01-01T00:00:00Z")]
    est = cost.estimate(key="k", max_iters=160000, grad_accum_steps=2, gpus=8,
                        local_device="cpu", measurements=found, published_seconds_per_iter=0.94)
    assert est.seconds_per_iter == pytest.approx(1.88)
    assert "published log" in est.basis and "x 2 accumulation" in est.basis
    assert cost.estimate(key="k", max_iters=100, grad_accum_steps=1, gpus=0, local_device="cpu",
                         measurements=found, published_seconds_per_iter=None) is None
    assert cost.estimate(key="k", max_iters=None, grad_accum_steps=1, gpus=8,
                         local_device=None, measurements=found,
                         published_seconds_per_iter=1.0) is None


def test_a_peak_above_the_gpu_memory_is_a_warning():
    found = [_measurement("k", "cuda A100", 0.5, "2026-01-01T00:00:00Z", peak=90.0, gpu_memory=80.0)]
    est = cost.estimate(key="k", max_iters=10, grad_accum_steps=1, gpus=1, local_device=None,
                        measurements=found, published_seconds_per_iter=None)
    assert "will not fit" in est.warnings[0]


@pytest.mark.parametrize("seconds, text", [(42, "42 s"), (420, "7 min"), (3 * 3600 + 720, "3 h 12 min"),
                                           (2 * 86400 + 4 * 3600, "2 d 4 h")])
def test_durations_read_well(seconds, text):
    assert cost.duration_text(seconds) == text


@pytest.mark.slow  # builds MiT-B0 and times two training steps
def test_segctl_bench_times_real_steps_and_keeps_them_for_plans(segctl_env):
    recipe = segctl_env / "tiny.yaml"
    recipe.write_text(frame_job_yaml("tiny", "/data/not-needed", crop_size="[64, 128]"))
    result = CliRunner().invoke(app, ["bench", str(recipe), "--iters", "2", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    (kept,) = cost.read_measurements(segctl_env / "home")
    assert kept.recipe == "tiny" and kept.device == "cpu" and kept.iters == 2
    assert kept.crop == (64, 128) and kept.batch == 1
    assert 0 < kept.seconds_per_iter < 60 and kept.peak_memory_gib > 0
    assert kept.step_key == cost.step_key(load_recipe(recipe).recipe)
    assert f"{kept.seconds_per_iter:.4f}" in result.output


def test_segctl_bench_refuses_a_count_below_one(segctl_env):
    recipe = segctl_env / "tiny.yaml"
    recipe.write_text(frame_job_yaml("tiny", "/data/not-needed"))
    result = CliRunner().invoke(app, ["bench", str(recipe), "--iters", "0"])
    assert result.exit_code == 2 and "--iters must be at least 1" in result.output
