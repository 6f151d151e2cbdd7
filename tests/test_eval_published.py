"""``segctl eval RECIPE --published``: the recipe's published trained model, scored on the user's
dataset, and test-server references that are never compared with a validation score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.cli.evaluate import default_format, published_comparison
from segctl.recipe import load_recipe
from tests.servers import range_server  # noqa: F401  (fixture)
from tests.test_cli_submit import write_recipe

runner = CliRunner()


def _with_reference(path: Path, reference: str) -> Path:
    path.write_text(path.read_text() + reference)
    return path


def test_published_needs_reference_checkpoint(segctl_env, cityscapes_frame_root):
    recipe = _with_reference(
        write_recipe(segctl_env, cityscapes_frame_root),
        "reference:\n  miou_ss: 75.0\n  source: a table\n",
    )
    result = runner.invoke(app, ["eval", str(recipe), "--published", "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "reference.checkpoint" in result.output and "Traceback" not in result.output
    both = runner.invoke(app, ["eval", str(recipe), "--published", "--checkpoint", "x.pth"])
    assert both.exit_code == 2 and "drop --checkpoint" in both.output
    assert not (segctl_env / "runs").exists()


def test_published_dry_run_plans_the_reference_checkpoint(segctl_env, cityscapes_frame_root):
    url = "https://example.org/models/segformer_b0_city-0123abcd.pth"
    recipe = _with_reference(
        write_recipe(segctl_env, cityscapes_frame_root),
        f"reference:\n  miou_ss: 75.0\n  source: a table\n  checkpoint: {url}\n",
    )
    result = runner.invoke(
        app, ["eval", str(recipe), "--published", "--dry-run", "--cluster", "local"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["kind"] == "eval" and plan["label"].startswith("published-ss-")
    assert not (segctl_env / "runs").exists()


@pytest.mark.parametrize(
    ("split", "expected"), [("val", "metrics"), ("test", "cityscapes-submission")]
)
def test_test_server_references_default_to_the_submission_format(
    segctl_env, cityscapes_frame_root, split, expected
):
    recipe = _with_reference(
        write_recipe(segctl_env, cityscapes_frame_root),
        f"reference:\n  miou_ss: 75.0\n  source: a table\n  split: {split}\n",
    )
    assert default_format(load_recipe(recipe).recipe) == expected


def test_published_comparison_shows_both_figures_and_never_compares_a_test_server_figure(
    segctl_env, cityscapes_frame_root
):
    path = write_recipe(segctl_env, cityscapes_frame_root)
    result = segctl_env / "published-ss.json"
    result.write_text(json.dumps({"mode": "ss", "metrics": {"mIoU": 74.5}}))

    val = load_recipe(_with_reference(path, "reference:\n  miou_ss: 75.0\n  source: t\n")).recipe
    assert published_comparison(val, result) == (
        "published checkpoint, single-scale: published mIoU 75.00, measured 74.50 (-0.50)"
    )
    test = val.model_copy(update={"reference": val.reference.model_copy(update={"split": "test"})})
    line = published_comparison(test, result)
    assert "measured mIoU 74.50" in line and "test-server figure, not comparable" in line
    assert "(-0.50)" not in line


@pytest.fixture(scope="module")
def published_segformer(range_server) -> str:
    """A full SegFormer MiT-B0 Cityscapes segmentor in mmseg's release format (``meta`` +
    ``state_dict``, random weights, real key names), served under mmseg's file-name convention
    ``...-<first 8 hex of its SHA-256>.pth``; returns the file name."""
    import hashlib

    import torch

    from trainer.models import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor("segformer_mit_b0", num_classes=19)
    saved = range_server.root / "segformer.tmp"
    torch.save({"meta": {"mmseg_version": "0.20.0"}, "state_dict": model.state_dict()}, saved)
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()
    name = f"segformer_mit-b0_8x1_1024x1024_160k_cityscapes_20211208_101857-{digest[:8]}.pth"
    saved.rename(range_server.root / name)
    return name


@pytest.mark.slow
def test_eval_published_scores_the_served_checkpoint_on_the_real_frame(
    segctl_env, cityscapes_frame_root, range_server, published_segformer
):
    url = f"{range_server.url}/{published_segformer}"
    recipe = _with_reference(
        write_recipe(segctl_env, cityscapes_frame_root),
        f"reference:\n  miou_ss: 75.0\n  source: a table\n  checkpoint: {url}\n",
    )
    since = range_server.log_size()
    result = runner.invoke(
        app, ["eval", str(recipe), "--published", "--single-scale", "--wait", "--cluster", "local"]
    )
    assert result.exit_code == 0, result.output
    assert "published checkpoint, single-scale: published mIoU 75.00, measured" in result.output
    assert "road" in result.output  # the per-class table
    assert len(range_server.requests(published_segformer, since=since)) == 1  # one GET, cached

    (run_dir,) = (segctl_env / "runs").iterdir()
    (scored,) = (run_dir / "eval").glob("published-ss-*.json")
    evaluation = json.loads(scored.read_text())
    assert evaluation["published"] is True and evaluation["checkpoint"].endswith(".pth")
    assert evaluation["metrics"]["mIoU"] is not None

    report = runner.invoke(app, ["report", "--format", "json"])
    assert report.exit_code == 0, report.output
    rows = json.loads(report.output)
    assert len(rows) == 1, rows
    (row,) = rows
    assert row["kind"] == "published checkpoint" and row["published_ss"] == 75.0
    assert row["reproduced_ss"] == pytest.approx(evaluation["metrics"]["mIoU"])
