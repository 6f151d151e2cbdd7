"""The embedded MLflow store (an SQLite file), created once however many processes start at once.

MLflow creates a missing SQLite store on first use (schema, migrations, default experiment);
two processes doing that at once both run the migrations and all but one fail (``table ...
already exists``, ``duplicate column name``). :func:`ensure_store` takes a file lock beside
the database (``<db>.lock``, :mod:`filelock`) and creates the store under it; a process that
finds it held waits for the creator, then finds the store complete. Every segctl command that
may be the first to open an embedded store (``submit``, ``eval``, ``report``) calls it first.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from segctl.paths import sqlite_path

#: Seconds a process waits for another one that is creating the store.
LOCK_TIMEOUT_S = 300.0


class TrackingStoreError(RuntimeError):
    """The embedded store cannot be created: its folder or file cannot be written, MLflow
    failed, or another process held its lock longer than :data:`LOCK_TIMEOUT_S`."""


def ensure_store(uri: str) -> None:
    """Create the embedded SQLite store at ``uri`` (and its folder) if it is missing or was
    left incomplete; other URIs are left alone (nothing is contacted). The file is the one
    SQLAlchemy opens (:func:`segctl.paths.sqlite_path`: percent-escapes decoded).

    Safe to call from many processes at once: the store is created under a lock held by one
    of them while the others wait (at most :data:`LOCK_TIMEOUT_S` seconds).

    Raises:
        TrackingStoreError: the store's folder or file cannot be written, the lock was not
            obtained in time, or MLflow failed to create the store (its message).
    """
    path = sqlite_path(uri)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # as MLflow does for a new store
    except OSError as exc:
        raise TrackingStoreError(
            f"cannot create the folder of the MLflow store {path} ({exc.strerror}): point "
            "MLFLOW_TRACKING_URI (or tracking.uri) at a writable place"
        ) from None
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            if not _complete(path):
                _create(uri, path)
    except Timeout:
        raise TrackingStoreError(
            f"another process has held {lock.lock_file} for {LOCK_TIMEOUT_S:.0f} s while "
            f"creating the MLflow store {path}: look for a stuck segctl process (the lock "
            "goes with the process that holds it)"
        ) from None
    except PermissionError as exc:
        raise TrackingStoreError(
            f"cannot write the MLflow store {path} or its lock ({exc.strerror}: "
            f"{exc.filename}): point MLFLOW_TRACKING_URI (or tracking.uri) at a writable place"
        ) from None


def _complete(path: Path) -> bool:
    """Whether ``path`` holds a store MLflow finished creating: its default experiment (the
    last thing MLflow writes) is there. Read without MLflow; a missing file is not created."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.Error:
        return False


def _create(uri: str, path: Path) -> None:
    """Let MLflow create (or finish) the store: schema, migrations, default experiment."""
    from mlflow.tracking import MlflowClient  # imported only when a store is new

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # MLflow and SQLAlchemy raise many kinds; the message says which
        raise TrackingStoreError(
            f"MLflow could not create its store {path}: {type(exc).__name__}: {exc}"
        ) from None
