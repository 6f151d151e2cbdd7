"""Helpers for tests: a one-frame Cityscapes root, small recipes (as YAML text and resolved),
and run directories with a recipe."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from segctl.recipe import Recipe, resolve

CITY = "frankfurt"


def one_frame_cityscapes(real_cityscapes: Path, root: Path) -> Path:
    """A Cityscapes root whose train and val splits both hold the val frame of
    ``real_cityscapes`` (copied): the shipped ``tests/data/samples/cityscapes`` (the
    ``real_data`` fixture's) or another root with a ``frankfurt`` val frame."""
    for kind in ("leftImg8bit", "gtFine"):
        source = real_cityscapes / kind / "val" / CITY
        for split in ("train", "val"):
            target = root / kind / split / CITY
            target.mkdir(parents=True, exist_ok=True)
            for file in source.iterdir():
                shutil.copy2(file, target / file.name)
    return root


def recipe_yaml(name: str, root: str = "/data/cityscapes", *, max_iters: int = 1000,
                interval: int = 500, batch_size: int = 2) -> str:
    """The text of a small complete recipe file: MiT-B0 on Cityscapes, crop 512x1024.

    ``interval`` is both the validation and the checkpoint interval. The text's line numbers
    are fixed: ``data.crop_size`` is on line 5 and ``schedule.max_iters`` on line 9.
    """
    return f"""\
name: {name}
data:
  dataset: cityscapes
  root: {root}
  crop_size: [512, 1024]
model:
  name: segformer_mit_b0
schedule:
  max_iters: {max_iters}
  val_interval: {interval}
  checkpoint_interval: {interval}
train:
  batch_size: {batch_size}
"""


def frame_job_yaml(name: str, root: str | Path, *, command: str = "", crop_size: str = "[64, 128]",
                   num_workers: int | str = 0, max_iters: int | str = 2, val_interval: int | str = 2,
                   checkpoint_interval: int | str = 2, log_interval: int = 1, data: str = "",
                   train: str = "", tail: str = "") -> str:
    """The text of a recipe file for a tiny MiT-B0 job on the one-frame Cityscapes root
    (batch 1, no warm-up, train scale and test scale 256x128).

    ``command`` becomes a leading ``# <command>`` line. ``data`` (lines indented by two
    spaces, after ``root``) and ``train`` (after ``batch_size``) add fields to their
    sections; ``tail`` adds sections at the end. The counts may be ``"{placeholder}"`` strings
    for a template filled later with ``str.format``.
    """
    head = f"# {command}\n" if command else ""
    return f"""{head}name: {name}
data:
  dataset: cityscapes
  root: {root}
{data}  crop_size: {crop_size}
  train_scale: [256, 128]
  num_workers: {num_workers}
model:
  name: segformer_mit_b0
schedule:
  max_iters: {max_iters}
  warmup_iters: 0
  val_interval: {val_interval}
  checkpoint_interval: {checkpoint_interval}
  log_interval: {log_interval}
train:
  batch_size: 1
{train}eval:
  test_scale: [256, 128]
{tail}"""


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def small_recipe(data_root: Path, tracking_uri: str, **sections: Any) -> Recipe:
    """A resolved CPU-sized MiT-B0 recipe on ``data_root``; ``sections`` override fields."""
    base = {
        "name": "trainer-test",
        "data": {
            "dataset": "cityscapes",
            "root": str(data_root),
            "crop_size": [128, 256],
            "train_scale": [256, 128],
            "ratio_range": [1.0, 1.0],
            "num_workers": 0,
        },
        "model": {"name": "segformer_mit_b0"},
        "optim": {"lr": 1e-3},
        "schedule": {
            "max_iters": 12,
            "val_interval": 1000,
            "checkpoint_interval": 4,
            "warmup_iters": 0,
            "log_interval": 4,
        },
        "train": {"batch_size": 2, "seed": 0, "deterministic": True},
        "eval": {"mode": "whole", "test_scale": [256, 128]},
        "tracking": {"uri": tracking_uri, "experiment": "trainer-tests"},
    }
    return resolve(Recipe.model_validate(_merge(base, sections)))


def make_run_dir(run_dir: Path, recipe: Recipe) -> Path:
    """Create ``run_dir`` with ``recipe.json``, as the control plane does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.json").write_text(recipe.model_dump_json(indent=2), encoding="utf-8")
    return run_dir
