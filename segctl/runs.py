"""Run directories: ``<runs dir>/<run id>/`` created with the resolved recipe the job reads.

The files of a run directory (the contract between the control plane and the trainer) are
named in one place, :class:`segctl.recipe.rundir.RunDir`; this module creates run directories
and their job folders and reads their recipe.

A run directory and its ``jobs/`` folder are private to their owner (mode 0700), as are the
job folders of sweeps (``<runs dir>/sweeps/<sweep>``): they are created so before anything is
written into them (:func:`create_private_dir`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from segctl.recipe import Recipe, parse_json_recipe
from segctl.recipe.rundir import RunDir

#: Mode of run directories and job folders: the owner only.
PRIVATE_MODE = 0o700


class RunDirError(RuntimeError):
    """A run directory exists but does not belong to the recipe being submitted."""


def create_run_dir(run_dir: Path, recipe: Recipe) -> bool:
    """Create ``run_dir`` (mode 0700) holding ``recipe.json``, atomically; reuse it if it holds
    the same run.

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
        raise ValueError(f"refusing to write {', '.join(secret)} into {RunDir(run_dir).recipe}")
    text = recipe.model_dump_json(indent=2) + "\n"
    if run_dir.exists():
        existing = RunDir(run_dir).recipe
        if not existing.is_file():
            raise RunDirError(f"{run_dir} exists but has no {RunDir.RECIPE}; move it away")
        if parse_json_recipe(existing.read_text()).name != recipe.name:
            raise RunDirError(f"{run_dir} belongs to another recipe; move it away")
        return False
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        os.chmod(staging, PRIVATE_MODE)  # mkdtemp's mode already; said here, as the contract
        RunDir(staging).recipe.write_text(text)
        os.rename(staging, run_dir)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if run_dir.is_dir() and RunDir(run_dir).recipe.is_file():
            return False  # another process created the same run at the same moment
        raise
    return True


def read_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe of a run.

    Raises:
        FileNotFoundError: the run directory has no ``recipe.json``.
        pydantic.ValidationError: the file does not match the schema.
    """
    return parse_json_recipe(RunDir(run_dir).recipe.read_text())


def create_jobs_folder(run_dir: Path) -> Path:
    """Create (or keep) a run's ``jobs/`` folder, mode 0700; returns it.

    Raises:
        OSError: it cannot be created, or its mode cannot be set (not ours).
    """
    return create_private_dir(RunDir(run_dir).jobs)


def create_private_dir(path: Path) -> Path:
    """Create ``path`` (its missing parents with the default mode) as a folder only its owner
    may read, write or enter (0700); an existing one is narrowed to 0700. Returns ``path``.

    Set explicitly after ``mkdir``: the process's umask only ever removes bits.

    Raises:
        OSError: it cannot be created, or its mode cannot be set (not ours).
    """
    path.mkdir(mode=PRIVATE_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != PRIVATE_MODE:
        os.chmod(path, PRIVATE_MODE)
    return path


def finished_training(run_dir: Path) -> str | None:
    """How a run's training ended, if it did: ``"iteration 300/300, mIoU 67.44"``, or None.

    A run has finished training when its ``progress.json`` says phase ``done`` and its
    ``checkpoints/final.pt`` exists (the job writes the weights, then the phase). A run without
    a directory, interrupted, failed or still training gives None.
    """
    run = RunDir(run_dir)
    progress = run.read_progress()
    if progress.get("phase") != "done" or not run.final.is_file():
        return None
    summary = f"iteration {progress.get('iteration')}/{progress.get('max_iters')}"
    miou = progress.get("miou")
    return summary if miou is None else f"{summary}, mIoU {float(miou):.2f}"
