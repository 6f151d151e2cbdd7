"""Weights files that must not be loaded: a pickle that runs code when unpickled (its
``__reduce__`` would create a marker file), a web page saved as ``.pth``, a file cut short.

Everywhere segctl reads weights (``model.init_checkpoint``, ``eval --checkpoint``, a resume
checkpoint, the weights cache's check) it refuses them in its own words, naming the file and
never suggesting ``weights_only=False``; at submission a local file is checked without torch,
so a bad one fails with exit 2 in well under a second of checking, before anything is
submitted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.weights_cache import UnloadableWeightsError
from segctl.recipe.eval_request import EvalRequest
from segctl.recipe.rundir import RunDir
from segctl.weights import check_loads, inspect_weights_file
from tests.servers import range_server  # noqa: F401  (fixture)
from tests.trainer_runs import make_run_dir, small_recipe
from trainer import checkpoint as ckpt
from trainer.entry import run_evaluation, run_training

runner = CliRunner()
REFUSED = "holds pickled Python objects other than tensors"


class _Planted:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path, **tensors: torch.Tensor) -> Path:
    """A torch.save zip file whose pickle holds tensors and a :class:`_Planted` object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**tensors, "extra": _Planted(marker)}, path)
    return path


def assert_refused_in_segctl_words(text: str, name: str) -> None:
    assert name in text and REFUSED in text and "segctl will not load it" in text, text
    assert "weights_only" not in text and "Traceback" not in text, text


def write_recipe(env: Path, root: Path, **model) -> Path:
    recipe = small_recipe(root, f"sqlite:///{env / 'mlflow.db'}", name="weights-check",
                          data={"crop_size": [64, 128]}, train={"batch_size": 1},
                          model={"name": "segformer_mit_b0", **model},
                          schedule={"max_iters": 2, "val_interval": 2, "checkpoint_interval": 2})
    path = env / "weights-check.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=True),
                                   sort_keys=False))
    return path


def no_jobs() -> bool:
    listed = runner.invoke(app, ["status", "--json"])
    return listed.exit_code == 0 and json.loads(listed.output or "[]") == []


# --- at submission -------------------------------------------------------------------------------


def test_planted_init_checkpoint_is_refused_at_submit(segctl_env, cityscapes_frame_root):
    marker = segctl_env / "MARKER"
    evil = plant(segctl_env / "weights" / "mit_b0.pth", marker, w=torch.ones(2))
    recipe = write_recipe(segctl_env, cityscapes_frame_root, init_checkpoint=str(evil))
    result = runner.invoke(app, ["submit", str(recipe), "--cluster", "local"])
    assert result.exit_code == 2, result.output
    assert_refused_in_segctl_words(result.output, f"model.init_checkpoint ({evil})")
    assert "posix.system" in result.output  # what it would have called
    assert not marker.exists() and no_jobs()


def test_planted_eval_checkpoint_is_refused_at_submit(segctl_env, cityscapes_frame_root):
    marker = segctl_env / "MARKER"
    evil = plant(segctl_env / "final.pt", marker, w=torch.ones(2))
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    result = runner.invoke(app, ["eval", str(recipe), "--checkpoint", str(evil),
                                 "--cluster", "local"])
    assert result.exit_code == 2, result.output
    assert_refused_in_segctl_words(result.output, f"--checkpoint ({evil})")
    assert not marker.exists() and no_jobs()


def _web_page(path: Path) -> None:
    path.write_text("<html><body>404 Not Found</body></html>\n")


def _cut_short(path: Path) -> None:
    torch.save({"w": torch.ones(10_000)}, path)
    path.write_bytes(path.read_bytes()[:20_000])


@pytest.mark.parametrize("make, says", [
    (_web_page, "neither a complete zip archive"),
    (_cut_short, "neither a complete zip archive"),
    (lambda path: path.mkdir(), "not a regular file"),
], ids=["web-page", "cut-short", "directory"])
def test_a_file_that_is_not_torch_weights_fails_submit_in_seconds(
        segctl_env, cityscapes_frame_root, make, says):
    bad = segctl_env / "weights.pth"
    make(bad)
    recipe = write_recipe(segctl_env, cityscapes_frame_root, init_checkpoint=str(bad))
    started = time.perf_counter()
    result = runner.invoke(app, ["submit", str(recipe), "--cluster", "local"])
    seconds = time.perf_counter() - started
    assert result.exit_code == 2, result.output
    assert f"model.init_checkpoint ({bad}) is not a PyTorch weights file" in result.output
    assert says in result.output and "Traceback" not in result.output, result.output
    assert seconds < 10, f"the refusal took {seconds:.1f} s"
    assert no_jobs()


def test_the_check_itself_takes_milliseconds_and_never_unpickles(tmp_path):
    marker = tmp_path / "MARKER"
    big = tmp_path / "big.pt"
    torch.save({f"w{i}": torch.zeros(1 << 20) for i in range(16)}, big)  # 64 MiB of tensors
    started = time.perf_counter()
    assert inspect_weights_file(big) == "zip"
    assert time.perf_counter() - started < 1.0
    evil = plant(tmp_path / "evil.pt", marker, w=torch.ones(2))
    with pytest.raises(UnloadableWeightsError) as caught:
        inspect_weights_file(evil, "model.init_checkpoint (evil.pt)")
    assert_refused_in_segctl_words(str(caught.value), "model.init_checkpoint (evil.pt)")
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert inspect_weights_file(legacy) == "legacy"
    assert not marker.exists()


def test_weights_cache_check_refuses_a_planted_download(segctl_env, range_server,
                                                        cityscapes_frame_root):
    marker = segctl_env / "MARKER"
    plant(range_server.root / "planted_mit_b0.pth", marker, w=torch.ones(2))
    url = f"{range_server.url}/planted_mit_b0.pth"
    recipe = write_recipe(segctl_env, cityscapes_frame_root, init_checkpoint=url)
    result = runner.invoke(app, ["weights", "fetch", "--quiet", str(recipe)])
    assert result.exit_code == 2, result.output
    assert_refused_in_segctl_words(result.output,
                                   f"model.init_checkpoint (planted_mit_b0.pth, {url})")
    submitted = runner.invoke(app, ["submit", str(recipe), "--cluster", "local"])
    assert submitted.exit_code == 2 and REFUSED in submitted.output, submitted.output
    assert not marker.exists() and no_jobs()


# --- in the job (the file changed after submission, or was never checked) ---------------------------


@pytest.fixture
def run_dir(tmp_path, cityscapes_frame_root) -> Path:
    def make(**model) -> Path:
        recipe = small_recipe(
            cityscapes_frame_root, f"sqlite:///{tmp_path / 'mlflow.db'}", name="weights-job",
            data={"crop_size": [64, 128], "ratio_range": [0.5, 1.0]},
            model={"name": "segformer_mit_b0", **model},
            schedule={"max_iters": 4, "warmup_iters": 0, "checkpoint_interval": 2,
                      "log_interval": 2, "val_interval": 1000},
        )
        return make_run_dir(tmp_path / "run", recipe)
    return make


@pytest.mark.slow
def test_job_refuses_a_planted_init_checkpoint(run_dir, tmp_path):
    marker = tmp_path / "MARKER"
    evil = plant(tmp_path / "mit_b0.pth", marker, w=torch.ones(2))
    folder = run_dir(init_checkpoint=str(evil))
    with pytest.raises(Exception) as caught:
        run_training(folder)
    assert_refused_in_segctl_words(str(caught.value), str(evil))
    assert caught.type is UnloadableWeightsError
    assert_refused_in_segctl_words(RunDir(folder).read_progress()["reason"], str(evil))
    assert not marker.exists()


def test_job_refuses_a_planted_eval_checkpoint(run_dir, tmp_path):
    marker = tmp_path / "MARKER"
    evil = plant(tmp_path / "final.pt", marker, w=torch.ones(2))
    with pytest.raises(Exception) as caught:
        run_evaluation(run_dir(), EvalRequest(ms_flip=False, checkpoint=str(evil)))
    assert_refused_in_segctl_words(str(caught.value), str(evil))
    assert not marker.exists()


def test_check_loads_refuses_in_segctl_words(tmp_path, cityscapes_frame_root):
    """The weights cache's torch check (meta-device model) says the same."""
    marker = tmp_path / "MARKER"
    evil = plant(tmp_path / "mit_b0.pth", marker, w=torch.ones(2))
    recipe = small_recipe(cityscapes_frame_root, f"sqlite:///{tmp_path / 'm.db'}")
    with pytest.raises(UnloadableWeightsError) as caught:
        check_loads(evil, recipe, "init", "mit_b0.pth")
    assert_refused_in_segctl_words(str(caught.value), "mit_b0.pth")
    assert not marker.exists()


@pytest.mark.slow
def test_planted_resume_checkpoint_is_named_set_aside_and_skipped(run_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    marker = tmp_path / "MARKER"
    folder = run_dir()
    run_training(folder, stop_after=2)
    planted = plant(ckpt.iteration_path(folder, 4), marker, iteration=torch.tensor(4))
    caplog.clear()
    result = run_training(folder, stop_after=2)
    assert result["iteration"] == 2 and not marker.exists()
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "checkpoint iter_0000004.pt cannot be used" in log
    assert_refused_in_segctl_words(log, str(planted))
    assert "resuming from iter_0000002.pt" in log
    assert (planted.parent / "iter_0000004.pt.rejected").is_file() and not planted.exists()
