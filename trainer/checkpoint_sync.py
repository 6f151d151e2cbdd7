"""Checkpoints on remote storage (``train.checkpoint_dir``, any fsspec URL): each one uploaded
as soon as it is written, remote pruning that follows local pruning, the end-of-job catch-up,
and the fetch at job start.

Every upload is atomic on the remote side (:func:`segctl.io.copy.upload_atomic`): readers never
see a partial object. Checkpoint names are matched with
:data:`segctl.recipe.rundir.ITERATION_CHECKPOINT`, the pattern :mod:`trainer.checkpoint` uses.
This module uses only the standard library, fsspec, :mod:`segctl.recipe` and
:mod:`segctl.io` (no torch).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segctl.io.copy import upload_atomic
from segctl.io.source import open_source
from segctl.recipe import Recipe
from segctl.recipe.rundir import RunDir, checkpoint_iteration

log = logging.getLogger(__name__)

UPLOAD_CLOSE_TIMEOUT_S = 300.0  # how long CheckpointUploader.close waits by default, seconds


def mirror_checkpoints(local_dir: str | Path, url: str,
                       storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Upload every ``*.pt`` in ``local_dir`` that the remote folder lacks or has in another
    size (atomically, :func:`upload_atomic`); returns the uploaded names."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        return []
    fs, root = open_source(url, storage_options)
    try:
        remote = {p.rsplit("/", 1)[-1]: int(i.get("size") or 0)
                  for p, i in fs.find(root, detail=True).items()}
    except FileNotFoundError:
        remote = {}
    uploaded = []
    for path in sorted(local_dir.glob("*.pt")):
        if remote.get(path.name) != path.stat().st_size:
            upload_atomic(path, f"{root}/{path.name}", fs=fs)
            uploaded.append(path.name)
    return uploaded


def fetch_checkpoints(url: str, local_dir: str | Path,
                      storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Download the remote ``*.pt`` checkpoints missing locally (for resume and evaluation);
    returns their names. A missing remote folder fetches nothing."""
    fs, root = open_source(url, storage_options)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return []
    local_dir = Path(local_dir)
    fetched = []
    for path, info in sorted(found.items()):
        name = path.rsplit("/", 1)[-1]
        if not name.endswith(".pt") or (local_dir / name).exists():
            continue
        local_dir.mkdir(parents=True, exist_ok=True)
        part = local_dir / f".{name}.part"
        fs.get_file(path, str(part))
        os.replace(part, local_dir / name)
        fetched.append(name)
    return fetched


class CheckpointUploader:
    """Copies each checkpoint to ``url`` right after it is written locally, from one background
    thread fed by a queue, so that training waits only for the enqueue.

    Every upload is atomic on the remote side (:func:`upload_atomic`). After a successful upload
    of an ``iter_*.pt`` the remote ``iter_*.pt`` that the local folder no longer holds are
    deleted (remote pruning follows local pruning); remote ones newer than the newest local one,
    and anything that is not an ``iter_*.pt`` (``final.pt``), are never deleted. A file pruned
    locally before its turn came is skipped. Failures are logged, never raised: the local
    checkpoints remain and the end-of-job mirror (:func:`mirror_checkpoints`) catches up.
    :meth:`close` drains the queue and joins the thread; call it before the job exits.
    """

    _STOP = object()

    def __init__(self, url: str, local_dir: str | Path,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        import queue

        self.url = url
        self.local_dir = Path(local_dir)
        self.storage_options = dict(storage_options or {})
        self.uploaded: list[str] = []
        self.failed: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._fs = None
        self._root = ""

    def submit(self, path: str | Path) -> None:
        """Queue ``path`` (a file in the local checkpoint folder) for upload; returns at once."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="checkpoint-upload",
                                                daemon=True)
                self._thread.start()
        self._queue.put(Path(path))

    def close(self, timeout: float | None = UPLOAD_CLOSE_TIMEOUT_S) -> bool:
        """Wait for every queued upload, then stop the thread.

        Args:
            timeout: the longest wait, in seconds (default :data:`UPLOAD_CLOSE_TIMEOUT_S`), so a
                hung upload cannot hold the job's exit; None waits without limit.

        Returns:
            False when ``timeout`` passed first: the uploads left are abandoned to the
            (daemon) thread, which dies with the process; the end-of-job mirror
            (:func:`mirror_checkpoints`) or the next run catches up.
        """
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        pending = self._queue.qsize()
        if pending:
            log.info("waiting for %d checkpoint upload(s) to %s", pending, self.url)
        self._queue.put(self._STOP)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("checkpoint uploads to %s still running after %.0f s; not waiting longer",
                        self.url, timeout)
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is self._STOP:
                    return
                self._upload(item)
            finally:
                self._queue.task_done()

    def _upload(self, path: Path) -> None:
        try:
            if self._fs is None:
                self._fs, self._root = open_source(self.url, self.storage_options)
            if not path.is_file():
                log.debug("%s was pruned before its upload", path.name)
                return
            started = time.perf_counter()
            upload_atomic(path, f"{self._root}/{path.name}", fs=self._fs)
            self.uploaded.append(path.name)
            log.info("uploaded %s to %s in %.1f s", path.name, self.url,
                     time.perf_counter() - started)
        except FileNotFoundError:
            if not path.exists():  # pruned locally while it was being read
                log.debug("%s was pruned during its upload", path.name)
                return
            self._failed(path, *sys.exc_info()[:2])
            return
        except Exception as exc:
            self._failed(path, type(exc), exc)
            return
        if checkpoint_iteration(path.name) is not None:
            try:
                self._prune()
            except Exception as exc:
                log.warning("old checkpoints at %s not pruned: %s: %s", self.url,
                            type(exc).__name__, exc)

    def _failed(self, path: Path, kind, exc) -> None:
        self.failed.append(path.name)
        log.warning("checkpoint %s not uploaded to %s: %s: %s", path.name, self.url,
                    getattr(kind, "__name__", kind), exc)

    def _prune(self) -> list[str]:
        local = {n for p in self.local_dir.glob("iter_*.pt")
                 if (n := checkpoint_iteration(p.name)) is not None}
        if not local:
            return []
        newest = max(local)
        fs, root = self._fs, self._root
        fs.invalidate_cache(root)
        deleted = []
        for path in fs.find(root):
            name = path.rsplit("/", 1)[-1]
            iteration = checkpoint_iteration(name)
            if iteration is not None and iteration not in local and iteration < newest:
                fs.rm_file(path)
                deleted.append(name)
        if deleted:
            log.info("pruned %s at %s", ", ".join(sorted(deleted)), self.url)
        return deleted


def checkpoint_uploader(recipe: Recipe, run_dir: str | Path,
                        enabled: bool = True) -> CheckpointUploader | None:
    """The job's (rank 0) :class:`CheckpointUploader` for ``train.checkpoint_dir``; None when
    the recipe has none or ``enabled`` is False."""
    url = recipe.train.checkpoint_dir
    if not url or not enabled:
        return None
    return CheckpointUploader(url, RunDir(run_dir).checkpoints, recipe.data.storage_options)

def mirror_job_checkpoints(recipe: Recipe, run_dir: str | Path, enabled: bool = True) -> None:
    """At job end (rank 0): copy the checkpoints that ``train.checkpoint_dir`` still lacks (a
    catch-up after :class:`CheckpointUploader`, which uploads each one as it is written).
    Failures are logged, never raised: the local checkpoints remain."""
    url = recipe.train.checkpoint_dir
    if not url or not enabled:
        return
    try:
        uploaded = mirror_checkpoints(RunDir(run_dir).checkpoints, url,
                                      recipe.data.storage_options)
        log.info("uploaded %d checkpoint(s) to %s", len(uploaded), url)
    except Exception as exc:
        log.warning("checkpoints not copied to %s: %s: %s", url, type(exc).__name__, exc)
