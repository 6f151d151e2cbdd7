"""Keeping the published global batch on fewer processes (segctl.batch_plan)."""

from __future__ import annotations

import pytest

from segctl.batch_plan import BatchPlanError, plan_batch

INTERNIMAGE_H = dict(published_processes=16, batch_size=1, grad_accum_steps=1, lr=2e-5,
                     warmup_iters=1500, max_iters=160000, has_batchnorm=True)


def test_the_published_placement_changes_nothing():
    plan = plan_batch(processes=16, **INTERNIMAGE_H)
    assert plan.grad_accum_steps == 1 and plan.global_batch == 16 and plan.overrides == []
    assert plan.notes == ()


def test_fewer_processes_keep_the_global_batch_by_accumulation():
    plan = plan_batch(processes=8, **INTERNIMAGE_H)
    assert plan.grad_accum_steps == 2
    assert plan.global_batch == plan.published_global_batch == 16
    assert plan.lr == 2e-5 and plan.warmup_iters == 1500
    assert plan.overrides == ["train.grad_accum_steps=2"]
    assert "8 processes x 1 image x 2 = the published global batch 16" in plan.notes[0]
    assert "BatchNorm statistics are computed per micro-batch" in plan.notes[1]
    rows = dict((name, (ours, published)) for name, ours, published in plan.table())
    assert rows["gradient accumulation"] == ("2", "1")
    assert rows["global batch"] == ("16", "16")
    assert rows["processes"] == ("8", "16")


def test_no_batchnorm_note_for_a_model_without_it():
    plan = plan_batch(processes=4, **dict(INTERNIMAGE_H, has_batchnorm=False))
    assert plan.grad_accum_steps == 4
    assert not any("BatchNorm" in note for note in plan.notes)


def test_a_batch_that_does_not_divide_is_refused_with_the_choices():
    with pytest.raises(BatchPlanError) as caught:
        plan_batch(processes=3, **INTERNIMAGE_H)
    message = str(caught.value)
    assert "published global batch 16" in message and "3 processes" in message
    assert "(1, 2, 4, 8, 16:" in message and "--scale-lr linear" in message


def test_linear_scaling_scales_the_learning_rate_and_the_warm_up_explicitly():
    plan = plan_batch(processes=4, scale_lr="linear", **INTERNIMAGE_H)
    assert plan.grad_accum_steps == 1 and plan.global_batch == 4
    assert plan.lr == pytest.approx(2e-5 * 4 / 16)
    assert plan.warmup_iters == 6000  # the same images in warm-up: 1500 x 16 / 4
    assert plan.max_iters == 160000
    assert set(plan.overrides) == {"optim.lr=5e-06", "schedule.warmup_iters=6000"}
    assert "learning rate x0.25" in plan.notes[0] and "iterations kept" in plan.notes[0]


def test_more_processes_than_published_are_noted_not_scaled():
    plan = plan_batch(processes=32, **INTERNIMAGE_H)
    assert plan.grad_accum_steps == 1 and plan.global_batch == 32 and plan.lr == 2e-5
    assert "not the published 16" in plan.notes[0]


def test_counts_below_one_are_refused():
    with pytest.raises(ValueError):
        plan_batch(processes=0, **INTERNIMAGE_H)
