"""MLflow tracking: the only module that talks to MLflow.

A :class:`Tracker` logs one run directory to one MLflow run. The MLflow run id is kept in
``RUN_DIR/mlflow_run_id``, so a resumed or re-submitted run continues the same MLflow run.
Every call catches every exception, logs one warning and returns: a tracking outage never stops
training. After a failure the tracker stays quiet for ``cooldown_s`` seconds (calls are
skipped), so an unreachable server costs at most one blocked call per cool-down.

Conventions: metric values are logged in percent for segmentation scores (``mIoU``, ``aAcc``,
``mAcc``, ``IoU.<class>``), as published tables state them; ``step`` is the iteration.
Non-finite values (the IoU of a class absent from both ground truth and prediction) are left
out.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from segctl.recipe import Recipe
from trainer.atomic import atomic_write

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
DEFAULT_URI = "sqlite:///mlflow.db"
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
_BATCH = 100  # MLflow's per-request limit on params and tags


def tracking_uri(recipe: Recipe) -> str:
    """``recipe.tracking.uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.

    The control plane always writes a concrete URI into the resolved recipe; the fallbacks
    serve recipes run by hand. The SQLite default is relative to the current directory.
    """
    return recipe.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sanitize_name(name: str) -> str:
    """A metric or param name MLflow accepts: other characters become ``_``, no empty parts.

    MLflow allows alphanumerics, ``_``, ``-``, ``.``, space and ``/`` (plus ``:`` off Windows);
    this keeps the portable set and removes empty or relative path segments.
    """
    cleaned = _BAD_NAME_CHARS.sub("_", name)
    parts = [p for p in cleaned.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to dotted keys with string values.

    Lists and tuples become JSON (``data.crop_size`` -> ``"[128, 256]"``), None ``"None"``,
    everything else ``str(value)``.
    """
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = str(value)
    return flat


def recipe_params(recipe: Recipe) -> dict[str, str]:
    """The resolved recipe flattened for ``log_params``."""
    return flatten_params(recipe.model_dump(mode="json"))


def segctl_version() -> str:
    """The installed segctl package version, or ``"unknown"``."""
    try:
        return metadata.version("segctl")
    except metadata.PackageNotFoundError:
        return "unknown"


def _default_artifact_location(uri: str) -> str | None:
    """``<folder of the database>/mlartifacts`` for a SQLite URI; None otherwise.

    Without it MLflow puts artifacts of a SQLite store under ``./mlruns`` of whatever the
    current directory is.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite" or not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    if str(db) in ("", ":memory:"):
        return None
    return (db.resolve().parent / "mlartifacts").as_uri()


class Tracker:
    """Log a run directory's params, metrics, tags and text artifacts to one MLflow run.

    Args:
        run_dir: the run directory; ``RUN_DIR/mlflow_run_id`` is read and written here.
        uri: the MLflow tracking URI (see :func:`tracking_uri`).
        experiment: the experiment name; created when missing.
        run_name: the MLflow run name used when a run is created (the run directory's name
            when None).
        enabled: False on ranks other than 0: every method is then a no-op.
        cooldown_s: seconds during which calls are skipped after a failed call.
        client_factory: builds the client from the URI (``mlflow.MlflowClient`` when None); a
            seam for other MLflow-compatible clients.

    Never raises from any method. :attr:`run_id` is None while no MLflow run is known.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        enabled: bool = True,
        cooldown_s: float = 300.0,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.uri = uri
        self.experiment = experiment
        self.run_name = run_name or self.run_dir.name
        self.enabled = enabled
        self.cooldown_s = cooldown_s
        self.run_id: str | None = None
        self._client = None
        self._client_factory = client_factory
        self._quiet_until = 0.0
        if enabled:
            self._call("start", self._start)

    @classmethod
    def for_recipe(
        cls, run_dir: str | Path, recipe: Recipe, *, enabled: bool = True, **kwargs: Any
    ) -> Tracker:
        """A tracker at :func:`tracking_uri` in ``recipe.tracking.experiment`` (or the dataset)."""
        return cls(
            run_dir,
            uri=tracking_uri(recipe),
            experiment=recipe.tracking.experiment or recipe.data.dataset,
            enabled=enabled,
            **kwargs,
        )

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        if not self.enabled:
            return None
        if time.monotonic() < self._quiet_until:
            log.debug("MLflow %s skipped: tracking is cooling down after a failure", what)
            return None
        try:
            return fn()
        except Exception as exc:  # any tracking failure is logged and swallowed
            self._quiet_until = time.monotonic() + self.cooldown_s
            log.warning(
                "MLflow %s failed (%s: %s); training continues, tracking paused for %.0f s",
                what, type(exc).__name__, exc, self.cooldown_s,
            )
            return None

    def _client_(self):
        if self._client is None:
            if self._client_factory is not None:
                self._client = self._client_factory(self.uri)
            else:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _start(self) -> None:
        client = self._client_()
        id_file = self.run_dir / RUN_ID_FILE
        if id_file.is_file():
            known = id_file.read_text(encoding="utf-8").strip()
            if known and self._resume(client, known):
                return
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            experiment_id = client.create_experiment(
                self.experiment, artifact_location=_default_artifact_location(self.uri)
            )
        else:
            experiment_id = experiment.experiment_id
        run = client.create_run(experiment_id, run_name=self.run_name)
        self.run_id = run.info.run_id
        atomic_write(id_file, lambda handle: handle.write(f"{self.run_id}\n".encode()))

    def _resume(self, client, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                log.warning("MLflow run %s not found at %s; starting a new one", run_id, self.uri)
                return False
            raise
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        return True

    def _ready(self) -> bool:
        if self.run_id is None:
            self._start()
        return self.run_id is not None

    # --- logging ----------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log string params (values longer than MLflow's 6000 characters are cut)."""

        def work() -> None:
            from mlflow.entities import Param

            if not self._ready():
                return
            items = [Param(sanitize_name(k), str(v)[:6000]) for k, v in params.items()]
            for i in range(0, len(items), _BATCH):
                self._client_().log_batch(self.run_id, params=items[i : i + _BATCH])

        self._call("log_params", work)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log float metrics at ``step`` (an iteration); non-finite values are skipped."""

        def work() -> None:
            from mlflow.entities import Metric

            if not self._ready():
                return
            now = int(time.time() * 1000)
            items = [
                Metric(sanitize_name(k), float(v), now, int(step))
                for k, v in metrics.items()
                if v is not None and math.isfinite(float(v))
            ]
            for i in range(0, len(items), 1000):
                self._client_().log_batch(self.run_id, metrics=items[i : i + 1000])

        self._call("log_metrics", work)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set string tags on the run."""

        def work() -> None:
            from mlflow.entities import RunTag

            if not self._ready():
                return
            items = [RunTag(k, str(v)) for k, v in tags.items()]
            for i in range(0, len(items), _BATCH):
                self._client_().log_batch(self.run_id, tags=items[i : i + _BATCH])

        self._call("set_tags", work)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file`` (a relative path, e.g. ``a/b.txt``)."""

        def work() -> None:
            if self._ready():
                self._client_().log_text(self.run_id, text, artifact_file)

        self._call("log_text", work)

    def close(self, status: str = "FINISHED") -> None:
        """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED`` (a resumed run reopens it)."""

        def work() -> None:
            if self.run_id is not None:
                self._client_().set_terminated(self.run_id, status=status)

        self._call("close", work)


def run_tags(recipe: Recipe, *, executor: str, job_id: str) -> dict[str, str]:
    """The ``segctl.*`` tags of a run: recipe hash, run id, executor, job id, version."""
    from segctl.recipe import recipe_hash, run_id

    return {
        "segctl.recipe_hash": recipe_hash(recipe),
        "segctl.run_id": run_id(recipe),
        "segctl.executor": executor,
        "segctl.job_id": job_id,
        "segctl.version": segctl_version(),
    }


def metrics_in_percent(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """``SegMetrics.to_dict`` values (fractions) as percent, keys prefixed with ``prefix``.

    Only ``aAcc``, ``mIoU``, ``mAcc`` and ``IoU.<class>`` are kept (per-class accuracy is in the
    text table).
    """
    keep = {
        k: v for k, v in metrics.items() if k in ("aAcc", "mIoU", "mAcc") or k.startswith("IoU.")
    }
    return {f"{prefix}{k}": v * 100.0 for k, v in keep.items()}
