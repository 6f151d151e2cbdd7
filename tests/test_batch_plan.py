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


# --- the plan of `segctl submit`, through the real CLI ---------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from segctl.cli import app  # noqa: E402
from segctl.cli.common import SBATCH_MARKER  # noqa: E402

HEADLINE = Path(__file__).resolve().parents[1] / "recipes" / "internimage_h_ade20k.yaml"


def _published_log(path: Path) -> Path:
    """An mmcv log of a 160k-iteration run: 0.94 s/iter, evaluations at 80k and 160k."""
    lines = [{"env_info": "made for a test"}]
    for it in (50, 80000, 160000):
        lines.append({"mode": "train", "epoch": 1, "iter": it, "lr": 1e-05, "loss": 0.5,
                      "time": 0.94})
        if it % 80000 == 0:
            lines.append({"mode": "val", "epoch": 1, "iter": 2000, "mIoU": 0.5 + it / 1e6})
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


def _plan(*args: str) -> dict:
    result = CliRunner().invoke(app, ["submit", str(HEADLINE), "--dry-run", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.split(SBATCH_MARKER)[0])


def test_the_plan_on_one_node_keeps_the_published_batch_and_estimates_the_cost(segctl_env):
    log = _published_log(segctl_env / "h.log.json")
    plan = _plan("--nodes", "1", "--cluster", "slurm", "--set", f"reference.log={log}")
    rows = {row[""]: (row["this run"], row["published"]) for row in plan["batch"]}
    assert rows["processes"] == ("8", "16")
    assert rows["gradient accumulation"] == ("2", "1")
    assert rows["global batch"] == ("16", "16")  # 8 GPUs x 1 image x 2 = the published 16
    assert rows["learning rate"] == ("2e-05", "2e-05")
    assert plan["parameters"]["nodes"] == 1 and plan["parameters"]["ntasks_per_node"] == 8
    estimate = plan["estimate"]
    assert estimate["seconds_per_iter"] == pytest.approx(1.88)  # the published 0.94 x 2
    assert estimate["gpu_hours"] == pytest.approx(1.88 * 160000 * 8 / 3600, abs=0.1)
    assert estimate["wall_time"] == "3 d 11 h" and "published log" in estimate["basis"]
    curve = plan["published_curve"]
    assert curve["cached"] is True and curve["final_miou"] == pytest.approx(66.0)
    assert curve["compared"] == "learning rate, loss and mIoU"
    assert any("gradient accumulation 2" in note for note in plan["notes"])
    assert any("BatchNorm statistics" in note for note in plan["notes"])
    # the same recipe on its own placement: nothing changes, and the run id is another
    own = _plan("--cluster", "slurm", "--set", f"reference.log={log}")
    assert dict((r[""], r["this run"]) for r in own["batch"])["gradient accumulation"] == "1"
    assert own["run_id"] != plan["run_id"]
    assert own["estimate"]["seconds_per_iter"] == pytest.approx(0.94)


def test_linear_scaling_on_the_command_line(segctl_env):
    plan = _plan("--nodes", "1", "--cluster", "slurm", "--scale-lr", "linear")
    rows = {row[""]: row["this run"] for row in plan["batch"]}
    assert rows["gradient accumulation"] == "1" and rows["global batch"] == "8"
    assert rows["learning rate"] == "1e-05" and rows["warm-up iterations"] == "3000"
    assert "no basis for an estimate" in plan["estimate"]["note"]


def test_a_placement_that_cannot_keep_the_batch_is_refused_with_the_choices(segctl_env):
    result = CliRunner().invoke(app, ["submit", str(HEADLINE), "--dry-run", "--nodes", "1",
                                      "--gpus-per-node", "3", "--cluster", "slurm"])
    assert result.exit_code == 2, result.output
    assert "published global batch 16" in result.output and "--scale-lr linear" in result.output
    assert "Traceback" not in result.output
    bad = CliRunner().invoke(app, ["submit", str(HEADLINE), "--dry-run", "--scale-lr", "sqrt"])
    assert bad.exit_code == 2 and "--scale-lr must be none or linear" in bad.output
