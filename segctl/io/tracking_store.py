"""The embedded MLflow store (an SQLite file): its ``sqlite:///`` URI, the file a URI names, and
its creation, once however many processes start at once.

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

#: Seconds a process waits for another one that is creating the store.
LOCK_TIMEOUT_S = 300.0


#: What a path must percent-encode in a ``sqlite:///`` URI. SQLAlchemy (which opens MLflow's
#: SQLite stores) cuts the database part at the first ``?`` (the query) and percent-decodes
#: it; URL parsers end a path at ``#`` (the fragment). Other characters travel as they are.
_SQLITE_QUOTED = {"%": "%25", "?": "%3F", "#": "%23"}


def sqlite_uri(path: str | Path) -> str:
    """``sqlite:///<path>`` for an SQLite database file, with ``%``, ``?`` and ``#`` of the path
    percent-encoded, so that ``/work/w?mode=ro#frag/mlflow.db`` stays that file instead of
    ``/work/w`` with a query. An absolute path gives ``sqlite:////...``.

    MLflow itself (3.x) creates the database's folder from the URI without decoding it, so a
    path that needed quoting leaves one empty folder with the encoded name beside the real one.
    """
    text = str(path)
    for char, code in _SQLITE_QUOTED.items():
        text = text.replace(char, code)
    return f"sqlite:///{text}"


def sqlite_path(uri: str) -> Path | None:
    """The database file a ``sqlite:///`` URI names, read as SQLAlchemy reads it (the part
    before ``?``, percent-decoded); None for other URIs and in-memory databases."""
    from urllib.parse import unquote

    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    database = unquote(uri[len(prefix):].split("?", 1)[0])
    return Path(database) if database not in ("", ":memory:") else None


class TrackingStoreError(RuntimeError):
    """The embedded store cannot be created: its folder or file cannot be written, MLflow
    failed, or another process held its lock longer than :data:`LOCK_TIMEOUT_S`."""


def ensure_store(uri: str) -> None:
    """Create the embedded SQLite store at ``uri`` (and its folder) if it is missing or was
    left incomplete; other URIs are left alone (nothing is contacted). The file is the one
    SQLAlchemy opens (:func:`sqlite_path`: percent-escapes decoded).

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
