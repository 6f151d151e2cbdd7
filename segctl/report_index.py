"""The report index: what ``segctl report`` needs of each MLflow run, kept in SQLite, so that a
report over thousands of runs answers without reading them all from MLflow.

``$SEGCTL_HOME/report-index.db`` holds, per tracking URI:

- ``runs``: one row per MLflow run tagged ``segctl.recipe_hash``: experiment, run id and name,
  start time (ms), recipe hash, and the params, metrics and other tags the report reads, as
  JSON (an index written before tags were kept gains the column, and is read whole again);
- ``stores``: when the URI was last read from MLflow (ms, the reader's clock), the experiments
  seen then (id -> creation time), which params, metrics and tags the rows hold, and, for an
  embedded SQLite store, the stamp of its files (:func:`store_stamp`);
- ``stale``: runs that ``segctl sync`` changed, read again by the next report.

The index is a cache of MLflow and holds nothing else: deleting the file loses nothing (the
next report reads every run again). URIs are kept with the secrets of their credentials hidden
(:func:`segctl.recipe.secrets.redact_url_credentials`). How and when it is refreshed is
:func:`segctl.tracking_query.refresh`'s business; this module stores and answers (it never
imports MLflow).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from segctl.io.home import segctl_home
from segctl.io.tracking_store import sqlite_path
from segctl.recipe.secrets import redact_url_credentials
from segctl.recipe.tracking_names import DATASET, RECIPE_HASH

INDEX_FILE = "report-index.db"
_TIMEOUT_S = 30.0  # how long a writer waits for another one, seconds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    uri TEXT PRIMARY KEY,
    refreshed_ms INTEGER NOT NULL,
    experiments TEXT NOT NULL,
    fields TEXT NOT NULL,
    stamp TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    uri TEXT NOT NULL,
    run_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    run_name TEXT,
    start_ms INTEGER,
    recipe_hash TEXT NOT NULL,
    dataset TEXT,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (uri, run_id)
);
CREATE TABLE IF NOT EXISTS stale (
    uri TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (uri, run_id)
);
"""


@dataclass
class IndexedRun:
    """What the report knows of one MLflow run. It answers the attributes the report reads of
    an ``mlflow.entities.Run`` (``run.info.run_id``, ``run.data.metrics`` ...): :attr:`info`
    and :attr:`data` are the object itself.

    Attributes:
        run_id, experiment_id, run_name: MLflow's.
        start_ms: the run's start time, ms since the epoch (None if unknown).
        recipe_hash: the ``segctl.recipe_hash`` tag.
        params: the params kept (strings); metrics: the latest value of each metric kept;
        kept_tags: the other tags kept (strings).
    """

    run_id: str
    experiment_id: str
    run_name: str | None
    start_ms: int | None
    recipe_hash: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    kept_tags: dict[str, str] = field(default_factory=dict)

    @property
    def info(self) -> IndexedRun:
        return self

    @property
    def data(self) -> IndexedRun:
        return self

    @property
    def tags(self) -> dict[str, str]:
        return {**self.kept_tags, RECIPE_HASH: self.recipe_hash}

    @classmethod
    def from_mlflow(cls, run, params: Iterable[str], metrics: Iterable[str],
                    tags: Iterable[str] = ()) -> IndexedRun:
        """The indexed form of an ``mlflow.entities.Run``, keeping only ``params``,
        ``metrics`` and ``tags`` (names)."""
        return cls(
            run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
            run_name=run.info.run_name,
            start_ms=run.info.start_time,
            recipe_hash=run.data.tags[RECIPE_HASH],
            params={k: run.data.params[k] for k in params if k in run.data.params},
            metrics={k: run.data.metrics[k] for k in metrics if k in run.data.metrics},
            kept_tags={k: run.data.tags[k] for k in tags if k in run.data.tags},
        )


@dataclass(frozen=True)
class StoreState:
    """The index's record of one tracking URI (see the module text)."""

    refreshed_ms: int
    experiments: dict[str, int | None]
    fields: str
    stamp: str | None


def store_stamp(uri: str) -> str | None:
    """For an embedded SQLite store, a string that changes whenever the store is written:
    inode, size and modification time (ns) of the database and of its ``-wal`` file
    (``missing`` when there is no database). None for other stores, whose changes only MLflow
    can tell."""
    path = sqlite_path(uri)
    if path is None:
        return None
    parts = []
    for name in (path, Path(f"{path}-wal")):
        try:
            st = os.stat(name)
        except OSError:
            parts.append("missing")
            continue
        parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
    return "/".join(parts)


class ReportIndex:
    """The index file (see the module text); open it with :meth:`open`.

    Args:
        connection: an open ``sqlite3`` connection holding the index's tables.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "tags" not in columns:  # an index written before tags were kept
            try:
                self._db.execute("ALTER TABLE runs ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'")
            except sqlite3.OperationalError as exc:  # another report added it meanwhile
                if "duplicate column" not in str(exc):
                    raise

    @classmethod
    def default_path(cls) -> Path:
        """``$SEGCTL_HOME/report-index.db``."""
        return segctl_home() / INDEX_FILE

    @classmethod
    @contextmanager
    def open(cls, path: str | Path | None = None) -> Iterator[ReportIndex]:
        """Open (creating) the index at ``path`` (default :meth:`default_path`;
        ``":memory:"`` for one that lives as long as the ``with`` block). A file that is not
        an SQLite database (a cache, so nothing is lost) is replaced.

        Raises:
            OSError: the folder cannot be created or the file cannot be opened or written.
        """
        target = str(path) if path is not None else str(cls.default_path())
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        try:
            index = cls(_connect(target))
        except sqlite3.DatabaseError as exc:
            if target == ":memory:" or "not a database" not in str(exc):
                raise OSError(f"cannot open the report index {target}: {exc}") from None
            os.replace(target, target + ".corrupt")
            index = cls(_connect(target))
        try:
            yield index
        finally:
            index._db.close()

    # --- what the report reads ----------------------------------------------------------------

    def store(self, uri: str) -> StoreState | None:
        """The record of ``uri``, or None when it was never read from MLflow."""
        row = self._db.execute(
            "SELECT refreshed_ms, experiments, fields, stamp FROM stores WHERE uri = ?",
            (_key(uri),),
        ).fetchone()
        if row is None:
            return None
        return StoreState(row[0], json.loads(row[1]), row[2], row[3])

    def runs(self, uri: str, dataset: str | None = None) -> list[IndexedRun]:
        """The indexed runs of ``uri`` (only those whose ``data.dataset`` param is ``dataset``
        when given), by experiment, latest start first."""
        query = ("SELECT run_id, experiment_id, run_name, start_ms, recipe_hash, params, metrics, "
                 "tags FROM runs WHERE uri = ?")
        args: tuple = (_key(uri),)
        if dataset is not None:
            query += " AND dataset = ?"
            args += (dataset,)
        query += " ORDER BY experiment_id, start_ms DESC, run_id"
        return [IndexedRun(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]),
                           json.loads(r[7]))
                for r in self._db.execute(query, args)]

    def stale(self, uri: str) -> list[str]:
        """Run ids of ``uri`` marked by :meth:`mark_stale`."""
        return [r[0] for r in self._db.execute("SELECT run_id FROM stale WHERE uri = ?",
                                               (_key(uri),))]

    # --- what a refresh writes ----------------------------------------------------------------

    def mark_stale(self, uri: str, run_ids: Iterable[str]) -> None:
        """Have the next refresh of ``uri`` read these runs again (or drop the ones MLflow no
        longer has)."""
        uri = _key(uri)
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO stale (uri, run_id) VALUES (?, ?)",
                                 [(uri, rid) for rid in run_ids])

    def save(self, uri: str, state: StoreState, runs: Iterable[IndexedRun], *,
             remove: Iterable[str] = (), replace: bool = False,
             experiments_gone: Iterable[str] = (), read_again: Iterable[str] = ()) -> None:
        """Record one refresh of ``uri`` in a single transaction: upsert ``runs``, drop the
        ``remove`` run ids and every run of ``experiments_gone``, clear the stale marks of
        ``read_again`` (every mark when ``replace``), store ``state``. ``replace`` drops every
        run of ``uri`` first (a full read)."""
        uri = _key(uri)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if replace:
                self._db.execute("DELETE FROM runs WHERE uri = ?", (uri,))
            self._db.executemany("DELETE FROM runs WHERE uri = ? AND run_id = ?",
                                 [(uri, rid) for rid in remove])
            self._db.executemany("DELETE FROM runs WHERE uri = ? AND experiment_id = ?",
                                 [(uri, eid) for eid in experiments_gone])
            self._db.executemany(
                "INSERT OR REPLACE INTO runs (uri, run_id, experiment_id, run_name, start_ms, "
                "recipe_hash, dataset, params, metrics, tags) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(uri, r.run_id, r.experiment_id, r.run_name, r.start_ms, r.recipe_hash,
                  r.params.get(DATASET), json.dumps(r.params), json.dumps(r.metrics),
                  json.dumps(r.kept_tags))
                 for r in runs],
            )
            if replace:
                self._db.execute("DELETE FROM stale WHERE uri = ?", (uri,))
            self._db.executemany("DELETE FROM stale WHERE uri = ? AND run_id = ?",
                                 [(uri, rid) for rid in read_again])
            self._db.execute(
                "INSERT OR REPLACE INTO stores (uri, refreshed_ms, experiments, fields, stamp) "
                "VALUES (?, ?, ?, ?, ?)",
                (uri, state.refreshed_ms, json.dumps(state.experiments), state.fields,
                 state.stamp),
            )


def _key(uri: str) -> str:
    """How the index names a tracking URI: without the secrets of its credentials."""
    return redact_url_credentials(uri)


def _connect(target: str) -> sqlite3.Connection:
    connection = sqlite3.connect(target, timeout=_TIMEOUT_S, isolation_level=None)
    connection.execute("PRAGMA journal_mode")  # reads the header: fails on a non-database
    return connection


def fields_key(params: Iterable[str], metrics: Iterable[str], tags: Iterable[str] = ()) -> str:
    """A key naming which params, metrics and tags rows hold (a change asks for a full
    read)."""
    fields = [sorted(params), sorted(metrics)] + ([sorted(tags)] if tags else [])
    return json.dumps(fields, separators=(",", ":"))


def experiments_map(experiments: Iterable) -> dict[str, int | None]:
    """``{experiment id: creation time (ms) or None}`` of MLflow experiments."""
    return {e.experiment_id: getattr(e, "creation_time", None) for e in experiments}


def changed_store(indexed: Mapping[str, int | None], current: Mapping[str, int | None]) -> bool:
    """Whether ``current`` experiments belong to another store than ``indexed`` ones: an id
    known to both with another creation time (a store deleted and made again, a server whose
    database was reset)."""
    return any(eid in indexed and indexed[eid] != created for eid, created in current.items())
