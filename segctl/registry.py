"""The job registry: a small SQLite database of runs and the jobs submitted for them.

One row per run (``runs``) and one per submitted job (``jobs``). A job row is written with state
``SUBMITTING`` *before* the executor is called and completed with the job id after, so a crash
between submission and record leaves a visible marker instead of an unknown job. States are
stored as text, in the vocabulary of :mod:`segctl.status` (:class:`~segctl.status.JobState`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segctl.status import TERMINAL_STATES, JobState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    recipe_hash TEXT NOT NULL,
    run_dir     TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    sweep       TEXT,
    overrides   TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL REFERENCES runs(run_id),
    kind         TEXT NOT NULL,
    executor     TEXT NOT NULL,
    job_id       TEXT,
    folder       TEXT NOT NULL,
    state        TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    finished_at  REAL,
    label        TEXT,
    nodes        TEXT,
    requeues     INTEGER NOT NULL DEFAULT 0,
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_run ON jobs(run_id, id);
"""

@dataclass(frozen=True)
class RunRecord:
    """A row of ``runs``.

    ``overrides``: what makes the run differ from its recipe file (``--set``, ``--sweep``), as
    ``a.b=value`` items with secrets hidden (:func:`segctl.recipe.overrides.run_overrides`);
    empty for a run of the file as it is, and for runs registered by older segctl versions.
    """

    run_id: str
    name: str
    recipe_hash: str
    run_dir: str
    source: str
    created_at: float
    sweep: str | None = None
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobRecord:
    """A row of ``jobs``. ``kind`` is ``train`` or ``eval``; ``label`` names an eval result."""

    id: int
    run_id: str
    kind: str
    executor: str
    job_id: str | None
    folder: str
    state: str
    submitted_at: float
    finished_at: float | None
    label: str | None
    nodes: str | None = None
    requeues: int = 0
    reason: str | None = None


class Registry:
    """Access to ``registry.db`` in a state directory (created if missing).

    Every method opens a short transaction, so several segctl processes may use it at once.

    Raises:
        sqlite3.Error: the database cannot be opened or written.
    """

    def __init__(self, home: Path):
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / "registry.db"
        with self._connect() as db:
            db.executescript(_SCHEMA)
            _add_missing_columns(db)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    # runs -------------------------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> None:
        """Insert a run; an existing row with the same id is kept as it is (only overrides it
        lacks, as a row written by an older segctl does, are filled in)."""
        with self._connect() as db:
            db.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET overrides = excluded.overrides "
                "WHERE runs.overrides IS NULL",
                (run.run_id, run.name, run.recipe_hash, run.run_dir, run.source, run.created_at,
                 run.sweep, json.dumps(list(run.overrides)) if run.overrides else None),
            )

    def runs(self) -> list[RunRecord]:
        """All runs, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at, run_id").fetchall()
        return [_run(row) for row in rows]

    def find_runs(self, key: str) -> list[RunRecord]:
        """Runs whose id equals ``key``, else whose name equals it (oldest first), else whose
        id starts with it. A recipe name comes before a prefix: ``quickstart`` names the runs
        of the recipe ``quickstart``, not those of ``quickstart-big`` too."""
        with self._connect() as db:
            for where, arg in (
                ("run_id = ?", key),
                ("name = ?", key),
                ("run_id LIKE ? ESCAPE '\\'", _like_prefix(key)),
            ):
                rows = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where} "
                                  "ORDER BY created_at, run_id", (arg,)).fetchall()
                if rows:
                    return [_run(row) for row in rows]
        return []

    def last_activity(self, run_ids: list[str]) -> dict[str, float]:
        """Run id -> when it was last active: its latest job's submission time, else its
        registration time (seconds since the epoch); runs not registered are left out."""
        marks = ", ".join("?" * len(run_ids))
        with self._connect() as db:
            rows = db.execute(
                f"SELECT runs.run_id, MAX(runs.created_at, COALESCE(MAX(jobs.submitted_at), 0)) "
                f"FROM runs LEFT JOIN jobs ON jobs.run_id = runs.run_id "
                f"WHERE runs.run_id IN ({marks}) GROUP BY runs.run_id", run_ids).fetchall()
        return {run_id: float(when) for run_id, when in rows}

    # jobs -------------------------------------------------------------------------------------

    def begin_job(self, run_id: str, kind: str, executor: str, folder: str, label: str | None) -> int:
        """Write the ``SUBMITTING`` marker for a job about to be submitted; returns its row id."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO jobs (run_id, kind, executor, folder, state, submitted_at, label) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, kind, executor, folder, JobState.SUBMITTING, time.time(), label),
            )
            return int(cursor.lastrowid)

    def submitted(self, row: int, job_id: str) -> None:
        """Record the executor's job id for the marker ``row``."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET job_id = ?, state = ? WHERE id = ?",
                       (job_id, JobState.SUBMITTED, row))

    def set_state(
        self,
        row: int,
        state: str,
        nodes: str | None = None,
        requeues: int | None = None,
        reason: str | None = None,
        expected: str | None = None,
    ) -> bool:
        """Record an observed state (and node list, requeue count, reason where known);
        terminal states also set ``finished_at`` (once).

        The update is a compare-and-set: with ``expected`` (the state the caller read before
        asking the scheduler) it applies only while the row still holds that state, and a
        non-terminal ``state`` never replaces a terminal one. So a ``status`` that read a job
        before another process recorded its end cannot put it back to ``RUNNING``.

        Returns:
            True if the row was updated; False if it holds another state than ``expected``,
            holds a terminal state that ``state`` would undo, or does not exist.
        """
        terminal = state in TERMINAL_STATES
        where = "id = ?"
        args: list = [row]
        if expected is not None:
            where += " AND state = ?"
            args.append(expected)
        if not terminal:
            where += f" AND state NOT IN ({', '.join('?' * len(TERMINAL_STATES))})"
            args.extend(sorted(TERMINAL_STATES))
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, finished_at = COALESCE(finished_at, ?), "
                "nodes = COALESCE(?, nodes), requeues = COALESCE(?, requeues), "
                f"reason = COALESCE(?, reason) WHERE {where}",
                (state, time.time() if terminal else None, nodes, requeues, reason, *args),
            )
            return cursor.rowcount == 1

    def job(self, row: int) -> JobRecord | None:
        """The job row ``row`` as it is now (None if there is none)."""
        with self._connect() as db:
            found = db.execute("SELECT * FROM jobs WHERE id = ?", (row,)).fetchone()
        return JobRecord(*found) if found else None

    def forget_job(self, row: int) -> None:
        """Delete a marker whose submission failed before any job existed."""
        with self._connect() as db:
            db.execute("DELETE FROM jobs WHERE id = ? AND job_id IS NULL", (row,))

    def forget_run(self, run_id: str) -> int:
        """Delete a run and all its job rows in one transaction; returns the jobs deleted."""
        with self._connect() as db:
            deleted = db.execute("DELETE FROM jobs WHERE run_id = ?", (run_id,)).rowcount
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return int(deleted)

    def jobs(self, run_id: str | None = None) -> list[JobRecord]:
        """Jobs of one run (or all), oldest first."""
        with self._connect() as db:
            if run_id is None:
                rows = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
            else:
                rows = db.execute("SELECT * FROM jobs WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [JobRecord(*row) for row in rows]


#: The columns of ``runs`` in :class:`RunRecord`'s order (a registry migrated by
#: :func:`_add_missing_columns` holds them in another order).
_RUN_COLUMNS = "run_id, name, recipe_hash, run_dir, source, created_at, sweep, overrides"


def _run(row: tuple) -> RunRecord:
    """A :class:`RunRecord` from a row of :data:`_RUN_COLUMNS`."""
    *fields, overrides = row
    return RunRecord(*fields, overrides=tuple(json.loads(overrides)) if overrides else ())


def _like_prefix(key: str) -> str:
    escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


_ADDED_COLUMNS = {
    "runs": {"sweep": "TEXT", "overrides": "TEXT"},
    "jobs": {"nodes": "TEXT", "requeues": "INTEGER NOT NULL DEFAULT 0", "reason": "TEXT"},
}


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a registry written by an older segctl up to the current schema."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
