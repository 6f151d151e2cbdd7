"""Run directories: ``<runs dir>/<run id>/`` with the resolved recipe the job reads.

Layout of a run directory (the contract between the control plane and the trainer)::

    recipe.json       resolved recipe (written once, here; read by the job); storage-option
                      secrets only as ${VAR} references (segctl.recipe.secrets)
    progress.json     rewritten atomically by rank 0 of a training job
    checkpoints/      iter_NNNNNNN.pt, final.pt
    eval/             <label>.json and <label>.txt per evaluation
    jobs/             submitit folders: pickled submissions, logs, results
    mlflow_run_id     the MLflow run this run logs to
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from segctl.recipe import Recipe, parse_json_recipe

RECIPE_FILE = "recipe.json"
PROGRESS_FILE = "progress.json"


class RunDirError(RuntimeError):
    """A run directory exists but does not belong to the recipe being submitted."""


def create_run_dir(run_dir: Path, recipe: Recipe) -> bool:
    """Create ``run_dir`` holding ``recipe.json``, atomically; reuse it if it holds the same run.

    The directory is assembled under a temporary name beside its final one and renamed, so a
    crash never leaves a run directory without its recipe.

    Returns:
        True if the directory was created, False if an existing one was reused.

    Raises:
        RunDirError: ``run_dir`` exists with a recipe of another name or missing its recipe.
        ValueError: ``recipe`` holds a literal secret in its storage options (the run directory
            is on shared storage: plan the submission, which moves them out, see
            :func:`segctl.recipe.secrets.externalize_secrets`).
        OSError: the directory cannot be written.
    """
    from segctl.recipe.secrets import literal_secrets

    secret = literal_secrets(recipe)
    if secret:
        raise ValueError(f"refusing to write {', '.join(secret)} into {run_dir / RECIPE_FILE}")
    text = recipe.model_dump_json(indent=2) + "\n"
    if run_dir.exists():
        existing = run_dir / RECIPE_FILE
        if not existing.is_file():
            raise RunDirError(f"{run_dir} exists but has no {RECIPE_FILE}; move it away")
        if parse_json_recipe(existing.read_text()).name != recipe.name:
            raise RunDirError(f"{run_dir} belongs to another recipe; move it away")
        return False
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        (staging / RECIPE_FILE).write_text(text)
        os.rename(staging, run_dir)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if run_dir.is_dir() and (run_dir / RECIPE_FILE).is_file():
            return False  # another process created the same run at the same moment
        raise
    return True


def read_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe of a run.

    Raises:
        FileNotFoundError: the run directory has no ``recipe.json``.
        pydantic.ValidationError: the file does not match the schema.
    """
    return parse_json_recipe((run_dir / RECIPE_FILE).read_text())


def read_progress(run_dir: Path) -> dict:
    """``progress.json`` as a dict, or {} if it is missing or being replaced."""
    try:
        return json.loads((run_dir / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def jobs_folder(run_dir: Path) -> Path:
    """The submitit folder of a run's jobs."""
    return run_dir / "jobs"
