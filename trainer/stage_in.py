"""The job's stage-in, at its start: the recipe's remote (or ``stage_to``) data root copied to
a local folder, the checkpoints kept at ``train.checkpoint_dir`` that the run directory lacks,
and ``model.init_checkpoint`` mapped to its file in the weights cache.

Where a remote root goes: ``data.stage_to`` (a folder), or ``"node-local"`` (also the default
for URLs): ``<scratch>/segctl-data/<dataset>-<hash8 of the root URL>``, where scratch is
``data.scratch_dir``, else ``$TMPDIR``, else the system temporary folder. Ranks sharing a
target take turns under a file lock (``<target>/.segctl-stage.lock``): the first copies, the
others only list (:func:`segctl.io.copy.stage` copies only what is new or changed).

The recipe these functions return is for this process only: ``recipe.json`` and MLflow keep
the original root and URLs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segctl.io.copy import DEFAULT_WORKERS, stage
from segctl.io.source import StagingError
from segctl.io.weights_cache import cached_path, is_remote
from segctl.recipe import Recipe
from segctl.recipe.rundir import RunDir
from trainer.checkpoint_sync import fetch_checkpoints

log = logging.getLogger(__name__)

NODE_LOCAL = "node-local"


def node_local_dir(scratch_dir: str | None = None) -> Path:
    """``scratch_dir`` if given, else ``$TMPDIR``, else the system temporary folder."""
    import tempfile

    return Path(scratch_dir or os.environ.get("TMPDIR") or tempfile.gettempdir()).expanduser()


def staging_target(root: str, stage_to: str | None, scratch_dir: str | None, name: str) -> Path:
    """The local directory a remote ``root`` is staged into.

    ``stage_to`` is a directory, or ``"node-local"`` (also the default for remote roots):
    ``<scratch>/segctl-data/<name>-<hash8 of the root URL>``.
    """
    if stage_to and stage_to != NODE_LOCAL:
        return Path(stage_to).expanduser()
    tag = hashlib.sha1(root.encode()).hexdigest()[:8]
    return node_local_dir(scratch_dir) / "segctl-data" / f"{name}-{tag}"


def stage_data_root(root: str, stage_to: str | None, scratch_dir: str | None,
                    storage_options: Mapping[str, Any], name: str,
                    workers: int = DEFAULT_WORKERS) -> str:
    """Stage a remote dataset root at job start and return the local root to read from.

    A local root (no ``://``) with no ``stage_to`` is returned unchanged; a local root with
    ``stage_to`` is copied there too (e.g. from shared storage to node-local scratch).
    """
    if "://" not in root and not stage_to:
        return root
    if root.startswith("file://") and not stage_to:
        return root[len("file://"):]
    target = staging_target(root, stage_to, scratch_dir, name)
    result = stage(root, target, workers=workers, storage_options=storage_options,
                   progress=False)
    log.info("%s", result.summary())
    return str(target)


def stage_job_inputs(recipe: Recipe, run_dir: str | Path) -> Recipe:
    """At job start: stage a remote (or ``stage_to``) data root and fetch checkpoints kept at
    ``train.checkpoint_dir`` that the run directory lacks; returns the recipe reading from the
    local root. Ranks sharing a target take turns under a file lock: the first copies, the
    others only list. The returned recipe is for this process only (``recipe.json`` keeps the
    original root)."""
    import fcntl

    data = recipe.data
    root = data.root
    if "://" in root or data.stage_to:
        target = staging_target(root, data.stage_to, data.scratch_dir, recipe.data.dataset)
        target.mkdir(parents=True, exist_ok=True)
        with open(target / ".segctl-stage.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                root = stage_data_root(root, data.stage_to or NODE_LOCAL, data.scratch_dir,
                                       data.storage_options, recipe.data.dataset)
            except StagingError:
                raise
            except Exception as exc:  # say what failed without the options (may hold secrets)
                raise StagingError(f"staging {data.root} failed: {type(exc).__name__}: {exc}") from None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    if recipe.train.checkpoint_dir:
        fetched = fetch_checkpoints(recipe.train.checkpoint_dir, RunDir(run_dir).checkpoints,
                                    data.storage_options)
        if fetched:
            log.info("fetched %d checkpoint(s) from %s", len(fetched), recipe.train.checkpoint_dir)
    return recipe.model_copy(update={"data": data.model_copy(update={"root": root})})


def with_cached_weights(recipe: Recipe, cache_dir: str | Path) -> Recipe:
    """The recipe with ``model.init_checkpoint`` mapped to the file to read
    (:func:`segctl.io.weights_cache.cached_path`), for this process only (``recipe.json`` and
    MLflow keep the URL).

    Raises:
        segctl.io.weights_cache.NotCachedError: the URL is not in the cache (at once, before any data is staged).
        FileNotFoundError: a local ``init_checkpoint`` does not exist.
    """
    url = recipe.model.init_checkpoint
    if not url:
        return recipe
    path = cached_path(url, cache_dir)
    if is_remote(url):
        log.info("model.init_checkpoint %s: cached file %s", url, path)
    return recipe.model_copy(update={"model": recipe.model.model_copy(
        update={"init_checkpoint": str(path)})})
