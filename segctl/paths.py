"""Where segctl keeps things: its state directory and the runs directory.

- ``$SEGCTL_HOME`` (default ``$XDG_STATE_HOME/segctl``, i.e. ``~/.local/state/segctl``) holds the
  job registry (``registry.db``).
- ``$SEGCTL_RUNS_DIR`` (default ``./runs`` in the working directory) holds one directory per run.
  On a cluster it must be on storage that the compute nodes share.
"""

from __future__ import annotations

import os
from pathlib import Path


def segctl_home() -> Path:
    """The state directory (created on first use by the registry)."""
    explicit = os.environ.get("SEGCTL_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return (Path(xdg).expanduser() / "segctl").resolve()


def runs_dir() -> Path:
    """The directory that holds run directories (not created here)."""
    return Path(os.environ.get("SEGCTL_RUNS_DIR", "runs")).expanduser().resolve()


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store ``./mlflow.db``
    (:func:`sqlite_uri` of its absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(Path.cwd().resolve() / "mlflow.db")


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


def is_url(location: str) -> bool:
    """True for fsspec URLs such as ``s3://bucket/x`` (not for plain or ``~`` paths)."""
    return "://" in location
