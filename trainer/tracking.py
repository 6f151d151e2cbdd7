"""MLflow tracking: the only module that talks to MLflow.

A :class:`Tracker` logs one run directory to one MLflow run. The MLflow run id is kept in
``RUN_DIR/mlflow_run_id``, so a resumed or re-submitted run continues the same MLflow run.
Every call catches every exception, logs one warning and returns: a tracking outage never stops
training.

Outages lose nothing: what cannot be delivered (params, metrics with their original step and
timestamp, tags, text and image artifacts, the final status) is appended to
``RUN_DIR/tracking-buffer.jsonl`` (images under ``RUN_DIR/tracking-buffer/``, which holds only
what is not delivered yet: an image's file is removed once it is delivered). After a failure
the tracker waits ``cooldown_s`` seconds before it talks to the server again (calls in between
only append to the buffer), so an unreachable server costs one blocked call per cool-down; the
next call that gets through first replays the buffer in order. :meth:`Tracker.close` always
tries once more; whatever is still buffered then is delivered by ``segctl sync RUN``
(:meth:`Tracker.flush`). For HTTP servers the tracker lowers MLflow's request retries and
timeout (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``, unless already
set) so that an outage costs seconds, not minutes.

A lost store loses nothing either: every record, delivered or not, is also appended to
``RUN_DIR/tracking-journal.jsonl``, which is kept for the life of the run directory (a resumed
job and evaluation jobs append to it). When the tracker starts and the MLflow run named in
``mlflow_run_id`` no longer exists (an embedded store deleted or replaced, a server's database
reset), it creates a new run and replays the journal into it: params, tags, every metric point
with its step and timestamp, text artifacts, images (a delivered image leaves
``tracking-buffer/`` for ``tracking-journal/``, so the buffer folder holds only what is still
to be delivered and a rebuild has every image), and the run's statuses; the new run is tagged
``segctl.rebuilt_from_journal`` (the lost run's id) and ``segctl.journal_complete``. A job that
is requeued does this at its start; ``segctl sync RUN`` does it for a run whose job has ended.
The journal is bounded by ``journal_max_bytes`` (:data:`JOURNAL_MAX_BYTES`, 64 MiB: a
160,000-iteration run logging every 50 iterations with 150-class evaluations writes about
2 MB); past it, records are delivered (or buffered) as before but no longer journaled, one
``{"op": "journal-full"}`` line marks the gap, and a rebuild tags the run
``segctl.journal_complete=false``. System metrics are not journaled (they are not buffered
either).

What a run gets (rank 0): params (the flattened recipe, the values of ``data.storage_options``
and of any other ``storage_options`` redacted, the secrets of credentials inside URLs too (the
rule of :mod:`segctl.recipe.secrets`), and ``segctl.from_scratch``: whether training starts
without pretrained weights), metrics with the iteration as step, per-class
IoU as metrics, text tables and a bar chart (``plots/per_class_iou_iter_*.png``) at each
evaluation, captioned prediction overlays of each evaluation job (``overlays/<label>/``), and
at :meth:`Tracker.close` the resolved recipe (redacted,
``recipe.json``), a learning-curve plot (``plots/learning_curve.png``), the final checkpoint's
location (tag ``segctl.final_checkpoint``), ``iterations_done`` and ``gpu_hours``. The names
are those of :mod:`segctl.recipe.tracking_names`, which the control plane reads back. Pictures
are drawn by the code that has them to show (:mod:`trainer.visuals`) and handed over as PNG
bytes (:meth:`Tracker.log_image`); the tracker draws nothing.

System metrics (training jobs, ``tracking.system_metrics``, on by default,
:class:`trainer.system_metrics.SystemMetrics`): MLflow's own monitor samples rank 0's node
every ``tracking.system_metrics_interval_s`` seconds in a daemon thread and logs
``system/cpu_utilization_percentage``, ``system/system_memory_usage_*``, ``system/disk_*``,
``system/network_*`` and, where ``nvidia-ml-py`` is installed and a GPU answers,
``system/gpu_<i>_*``, with the sample count as step (continued on resume).
``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` set to true or false overrides the recipe for every
run; ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides the interval (MLflow reads it).
Samples are not buffered: during an outage MLflow's monitor logs one warning and ends, and the
tracker starts a new one after its next successful delivery. Without ``psutil`` (or when the
monitor cannot start) one warning is logged and training goes on without system metrics.

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
import secrets
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from segctl.recipe import Recipe
from segctl.recipe import tracking_names as names
from segctl.recipe.rundir import RunDir
from segctl.recipe.secrets import redact_secrets, redact_url_credentials, url_secrets
from segctl.io.atomic import atomic_write
from trainer.system_metrics import SystemMetrics

log = logging.getLogger(__name__)

RUN_ID_FILE = RunDir.MLFLOW_RUN_ID
BUFFER_FILE = RunDir.TRACKING_BUFFER
JOURNAL_FILE = RunDir.TRACKING_JOURNAL
#: Bytes a run's journal may grow to; later records are not journaled (see the module text).
JOURNAL_MAX_BYTES = 64 * 2**20
#: The journal line written once where records stop being journaled.
JOURNAL_FULL = {"op": "journal-full"}
#: Tag of a run rebuilt from the journal: the id of the MLflow run that was lost.
REBUILT_TAG = names.REBUILT_FROM_JOURNAL
#: Tag of a rebuilt run: ``true`` when the journal held every record, else ``false``.
COMPLETE_TAG = names.JOURNAL_COMPLETE
DEFAULT_URI = "sqlite:///mlflow.db"
#: MLflow's switch for system metrics; set (true/false) it overrides ``tracking.system_metrics``.
SYSTEM_METRICS_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
#: MLflow HTTP client settings used when the environment does not set them.
HTTP_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
#: MLflow's switch that stops it printing run links (which hold the tracking URI) on stdout:
#: set for URIs with credentials.
QUIET_URL_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
_BATCH = 100  # MLflow's per-request limit on params and tags


def tracking_uri(recipe: Recipe) -> str:
    """``recipe.tracking.uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.

    The control plane always writes a concrete URI into the resolved recipe; the fallbacks
    serve recipes run by hand. The SQLite default is relative to the current directory.
    """
    return recipe.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def system_metrics_enabled(recipe: Recipe) -> bool:
    """Whether a training job logs system metrics: ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``
    when it is set to a boolean (``true``/``1`` or ``false``/``0``), else
    ``recipe.tracking.system_metrics``."""
    value = os.environ.get(SYSTEM_METRICS_ENV, "").strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    return recipe.tracking.system_metrics


def ensure_store(uri: str) -> None:
    """Create an embedded SQLite tracking store (schema and default experiment) if it is
    missing, under a file lock beside it, so processes that start together (a sweep, the
    tasks of one job, concurrent submissions) create it once. Other URIs are left alone.

    The work is :func:`segctl.io.tracking_store.ensure_store` (torch-free, shared by both planes).

    Raises:
        segctl.io.tracking_store.TrackingStoreError: the store cannot be created (a missing
            folder, for instance).
    """
    from segctl.io.tracking_store import ensure_store as ensure_store_locked

    ensure_store_locked(uri)


def sanitize_name(name: str) -> str:
    """A metric or param name MLflow accepts: other characters become ``_``, no empty parts.

    MLflow allows alphanumerics, ``_``, ``-``, ``.``, space and ``/`` (plus ``:`` off Windows);
    this keeps the portable set and removes empty or relative path segments.
    """
    cleaned = _BAD_NAME_CHARS.sub("_", name)
    parts = [p for p in cleaned.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to dotted keys with string values, secrets redacted
    (:func:`redact`).

    Lists and tuples become JSON (``data.crop_size`` -> ``"[128, 256]"``), None ``"None"``,
    everything else ``str(value)``. Every value inside a storage-options mapping becomes
    ``"***"`` (the keys stay, so one sees that an option was set); the secrets of URL
    credentials ``***`` inside their URL.
    """
    return _flatten(redact(data), prefix)


def _flatten(data: Mapping[str, Any], prefix: str) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = str(value)
    return flat


def redact(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of nested ``data`` (a dumped recipe) as MLflow may see it: segctl's one
    redaction rule (:func:`segctl.recipe.secrets.redact_secrets`) with every storage option
    hidden, secret-named or not (endpoints and profiles are site details)."""
    return redact_secrets(data, every_option=True)


def recipe_params(recipe: Recipe) -> dict[str, str]:
    """The resolved recipe flattened for ``log_params`` (secrets redacted), plus
    ``segctl.from_scratch``: ``true`` when training starts from random weights (no
    ``model.init_checkpoint``; ``segctl submit`` asks for ``--from-scratch`` where the recipe
    reproduces a published result), else ``false``."""
    params = flatten_params(recipe.model_dump(mode="json"))
    params[names.FROM_SCRATCH] = "false" if recipe.model.init_checkpoint else "true"
    return params


def segctl_version() -> str:
    """The installed segctl package version, or ``"unknown"``."""
    try:
        return metadata.version("segctl")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit(folder: str | Path | None = None) -> str | None:
    """The commit of the git working tree holding ``folder`` (default: this source tree),
    with ``+dirty`` when it has uncommitted changes; None outside a work tree or without git."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def _default_artifact_location(uri: str) -> str | None:
    """``<folder of the database>/mlartifacts`` for a SQLite URI; None otherwise.

    Without it MLflow puts artifacts of a SQLite store under ``./mlruns`` of whatever the
    current directory is.
    """
    from segctl.io.tracking_store import sqlite_path  # standard library only

    db = sqlite_path(uri)  # percent-decoded, as SQLAlchemy opens it
    if db is None:
        return None
    return (db.resolve().parent / "mlartifacts").as_uri()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _lines(path: Path) -> list[str]:
    """The non-empty lines of a JSON-lines file ([] when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _append_line(path: Path, line: str) -> bool:
    """Append ``line`` and a newline to ``path`` durably (fsync); False on an OSError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        return False
    return True


def _coalesced(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with each stretch of consecutive ``metrics`` records merged into one (sent
    in batches of MLflow's size), the order of everything else kept."""
    out: list[dict[str, Any]] = []
    for record in records:
        if record.get("op") == "metrics" and out and out[-1].get("op") == "metrics":
            out[-1] = {"op": "metrics", "items": out[-1]["items"] + record["items"]}
        else:
            out.append(record)
    return out


class Tracker:
    """Log a run directory's params, metrics, tags and artifacts to one MLflow run.

    Args:
        run_dir: the run directory; ``RUN_DIR/mlflow_run_id`` is read and written here,
            ``RUN_DIR/tracking-buffer.jsonl`` holds what could not be delivered yet and
            ``RUN_DIR/tracking-journal.jsonl`` every record logged (see the module text).
        uri: the MLflow tracking URI (see :func:`tracking_uri`).
        experiment: the experiment name; created when missing.
        run_name: the MLflow run name used when a run is created (the run directory's name
            when None).
        enabled: False on ranks other than 0: every method is then a no-op.
        cooldown_s: seconds during which the server is not asked after a failed call
            (records go to the buffer meanwhile).
        client_factory: builds the client from the URI (``mlflow.MlflowClient`` when None); a
            seam for other MLflow-compatible clients.
        recipe: the resolved recipe, for the end-of-run record (:meth:`close`): the redacted
            recipe artifact, GPU count and the final checkpoint's location.
        devices: ``(GPUs, CPU cores)`` the job computes on (:func:`devices_in_use`), for
            ``gpu_hours`` and, on CPUs (no GPU), ``core_hours``; None: the recipe's
            ``cluster.nodes * cluster.gpus_per_node`` GPUs.
        reopen: mark a finished MLflow run ``RUNNING`` again when continuing it (False for
            ``segctl sync``, which only delivers what a job left behind).
        system_metrics: run MLflow's system metrics monitor on this run while the tracker is
            open (see the module docstring); ``system_metrics_interval_s`` is its sampling
            interval in seconds.
        journal_max_bytes: the journal's bound in bytes (:data:`JOURNAL_MAX_BYTES`).

    Never raises from any method. :attr:`run_id` is None while no MLflow run is known;
    :attr:`rebuilt` is the number of journal records replayed into a new run when the known
    one was found missing (None when no rebuild happened).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        enabled: bool = True,
        cooldown_s: float = 30.0,
        client_factory: Callable[[str], Any] | None = None,
        recipe: Recipe | None = None,
        reopen: bool = True,
        system_metrics: bool = False,
        system_metrics_interval_s: float = 10.0,
        journal_max_bytes: int = JOURNAL_MAX_BYTES,
        devices: tuple[int, int] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.devices = devices
        self.reopen = reopen
        self.uri = uri
        self.experiment = experiment
        self.run_name = run_name or self.run_dir.name
        self.enabled = enabled
        self.cooldown_s = cooldown_s
        self.recipe = recipe
        self.run_id: str | None = None
        self.rebuilt: int | None = None
        self.lost_run_id: str | None = None
        self.journal_max_bytes = journal_max_bytes
        self._journal_bytes = _size(self.journal_path)
        self._journal_full = False
        self._inflight: str | None = None  # the record being delivered, already journaled
        self._client = None
        self._client_factory = client_factory
        self._quiet_until = 0.0
        self._started = time.monotonic()
        self._max_step = 0
        self._history: dict[str, list[tuple[int, float]]] = {
            names.LOSS: [], names.LR: [], names.MIOU: []}
        self._previous = {names.GPU_HOURS: 0.0, names.CORE_HOURS: 0.0,
                          names.ITERATIONS_DONE: 0.0}
        self._system = SystemMetrics(uri, enabled=system_metrics,
                                     interval_s=system_metrics_interval_s)
        self._closed = False
        if enabled:
            if uri.startswith(("http://", "https://")):
                for key, value in HTTP_CLIENT_ENV.items():
                    os.environ.setdefault(key, value)  # this process talks to MLflow only here
                if url_secrets(uri):  # MLflow prints "View run ... at: <uri>" on stdout
                    os.environ[QUIET_URL_ENV] = "true"
            self._call("start", self._start)
            self._ensure_system_metrics()

    @classmethod
    def for_recipe(
        cls, run_dir: str | Path, recipe: Recipe, *, enabled: bool = True,
        system_metrics: bool | None = None, **kwargs: Any
    ) -> Tracker:
        """A tracker at :func:`tracking_uri` in ``recipe.tracking.experiment`` (or the dataset).

        ``system_metrics`` None follows :func:`system_metrics_enabled` (training jobs); pass
        False where no job is being watched (``segctl sync``, evaluation records).
        """
        if system_metrics is None:
            system_metrics = system_metrics_enabled(recipe)
        return cls(
            run_dir,
            uri=tracking_uri(recipe),
            experiment=recipe.tracking.experiment or recipe.data.dataset,
            enabled=enabled,
            recipe=recipe,
            system_metrics=system_metrics,
            system_metrics_interval_s=recipe.tracking.system_metrics_interval_s,
            **kwargs,
        )

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def layout(self) -> RunDir:
        """The run directory's file names."""
        return RunDir(self.run_dir)

    @property
    def buffer_path(self) -> Path:
        return self.layout.tracking_buffer

    @property
    def journal_path(self) -> Path:
        return self.layout.tracking_journal

    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        """``{"loss": [(step, value)], "lr": [...], "mIoU": [...]}``: the points this tracker
        logged (for :func:`trainer.visuals.learning_curve_png`)."""
        return self._history

    def pending(self) -> int:
        """Records waiting in the buffer file."""
        try:
            with open(self.buffer_path, encoding="utf-8") as handle:
                return sum(1 for line in handle if line.strip())
        except OSError:
            return 0

    def _call(self, what: str, fn: Callable[[], Any], force: bool = False) -> Any:
        if not self.enabled:
            return None
        if not force and time.monotonic() < self._quiet_until:
            log.debug("MLflow %s skipped: tracking is cooling down after a failure", what)
            return None
        try:
            return fn()
        except Exception as exc:  # any tracking failure is logged and swallowed
            self._quiet_until = time.monotonic() + self.cooldown_s
            log.warning(
                "MLflow %s failed (%s: %s); training continues, records are buffered in %s, "
                "tracking paused for %.0f s",
                what, type(exc).__name__, redact_url_credentials(str(exc)), self.buffer_path,
                self.cooldown_s,
            )
            return None

    # --- system metrics (MLflow's monitor thread) -------------------------------------------

    def _ensure_system_metrics(self) -> None:
        """Start the system metrics monitor when none runs (:meth:`SystemMetrics.ensure`):
        at start, and after each successful delivery."""
        if self.enabled and not self._closed:
            self._system.ensure(self.run_id, self.cooldown_s)

    def _stop_system_metrics(self) -> None:
        """Stop the monitor, quietly while the server is known to be away."""
        self._system.stop(quiet=time.monotonic() < self._quiet_until)

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
        id_file = self.layout.mlflow_run_id
        lost = None
        if id_file.is_file():
            known = id_file.read_text(encoding="utf-8").strip()
            if known and self._resume(client, known):
                return
            lost = known or None
        run = client.create_run(self._experiment_id(client), run_name=self.run_name)
        self.run_id = run.info.run_id
        if lost is not None:
            try:
                self._rebuild(client, lost)
            except Exception:
                self.run_id = None  # the next start tries again, into another new run
                try:
                    client.delete_run(run.info.run_id)
                except Exception:  # the half-built run stays; the next rebuild is whole
                    pass
                raise
        atomic_write(id_file, lambda handle: handle.write(f"{self.run_id}\n".encode()))

    def _experiment_id(self, client) -> str:
        """The id of :attr:`experiment`, created when missing. Jobs that start together (a
        sweep's array, the ranks of two runs) race to create it: the loser finds the winner's."""
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(
                self.experiment, artifact_location=_default_artifact_location(self.uri)
            )
        except MlflowException:
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _resume(self, client, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                log.warning("MLflow run %s not found at %s; rebuilding it from %s in a new run",
                            run_id, redact_url_credentials(self.uri), self.journal_path)
                return False
            raise
        if self.reopen and run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        self._remember(run)
        self.run_id = run_id
        return True

    def _remember(self, run) -> None:
        """Continue ``gpu_hours``, ``core_hours`` and ``iterations_done`` from what ``run``
        holds."""
        for key in self._previous:
            self._previous[key] = float(run.data.metrics.get(key, 0.0))

    def _rebuild(self, client, lost: str) -> None:
        """Replay the journal into the new run :attr:`run_id` in place of the lost run
        ``lost``: every journaled record except those still buffered (and the one being
        delivered), which the normal delivery sends right after. Raises on the first failure."""
        waiting = set(_lines(self.buffer_path))
        if self._inflight is not None:
            waiting.add(self._inflight)
        complete, records, gone = True, [], 0
        for line in _lines(self.journal_path):
            if line in waiting:
                continue
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a crash while it was written
                complete = False
                continue
            if record == JOURNAL_FULL:
                complete = False
            elif record.get("op") == "file" and self._image_file(record) is None:
                gone += 1  # removed by hand, or a run directory of an older segctl
                complete = False
            else:
                records.append(record)
        if gone:
            log.warning("%d journaled images are in neither %s nor %s; the rebuilt run lacks "
                        "them", gone, self.layout.tracking_buffer_dir,
                        self.layout.tracking_journal_dir)
        for record in _coalesced(records):
            self._send(record)
        self._send({"op": "tags", "items": {REBUILT_TAG: lost,
                                            COMPLETE_TAG: "true" if complete else "false"}})
        if self.reopen:  # a replayed status ended the new run; this job goes on with it
            client.update_run(self.run_id, status="RUNNING")
        self._remember(client.get_run(self.run_id))
        self.rebuilt, self.lost_run_id = len(records), lost
        log.warning("MLflow run %s was lost: rebuilt %d journal records into run %s at %s%s",
                    lost, len(records), self.run_id, redact_url_credentials(self.uri),
                    "" if complete else " (the journal missed some records)")

    def _ready(self) -> bool:
        if self.run_id is None:
            self._start()
        return self.run_id is not None

    # --- delivery: send, or buffer and replay ---------------------------------------------------

    def _record(self, record: dict[str, Any], what: str) -> None:
        """Deliver ``record`` now if the server answers and nothing is queued before it;
        otherwise append it to the buffer (order is kept)."""
        if not self.enabled:
            return
        line = json.dumps(record)
        self._journal(line)

        def work() -> None:
            self._replay()
            self._send(record)

        queued = self.pending() > 0
        if time.monotonic() < self._quiet_until:
            self._append(line)
            return
        if queued:
            self._append(line)
            if self._call(what, self._replay) is not None:  # the server answers again
                self._ensure_system_metrics()
            return
        self._inflight = line
        try:
            delivered = self._call(what, lambda: (work(), True)[1])
        finally:
            self._inflight = None
        if not delivered:
            self._append(line)
        elif record["op"] != "status":
            self._ensure_system_metrics()

    def _append(self, line: str) -> None:
        """Add one record (a JSON line) to the buffer."""
        if not _append_line(self.buffer_path, line):
            log.warning("cannot buffer a tracking record in %s", self.buffer_path)

    def _journal(self, line: str) -> None:
        """Add one record (a JSON line) to the journal, within :attr:`journal_max_bytes`."""
        if self._journal_full:
            return
        size = len(line.encode("utf-8")) + 1
        if self._journal_bytes + size > self.journal_max_bytes:
            self._journal_full = True
            log.warning("tracking journal %s reached %d bytes: later records are not "
                        "journaled (a rebuild of a lost MLflow run would miss them)",
                        self.journal_path, self.journal_max_bytes)
            line = json.dumps(JOURNAL_FULL)
            size = len(line) + 1
        if _append_line(self.journal_path, line):
            self._journal_bytes += size
        else:
            log.warning("cannot journal a tracking record in %s", self.journal_path)

    def _replay(self) -> int:
        """Send the buffered records in order; the ones not sent stay buffered. Raises on the
        first failure (after rewriting the buffer without the records already sent)."""
        if not self.buffer_path.is_file():
            return 0
        lines = [line for line in self.buffer_path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
        sent = 0
        try:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut by a crash while it was written
                    log.warning("skipping an unreadable line of %s", self.buffer_path)
                    sent += 1
                    continue
                self._send(record)
                sent += 1
        finally:
            rest = lines[sent:]
            if rest:
                text = "".join(line + "\n" for line in rest)
                atomic_write(self.buffer_path, lambda h: h.write(text.encode("utf-8")))
            else:
                self.buffer_path.unlink(missing_ok=True)
        if sent:
            log.info("delivered %d buffered tracking records to %s", sent,
                     redact_url_credentials(self.uri))
        return sent

    def _send(self, record: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if not self._ready():
            raise RuntimeError("no MLflow run")
        client, op = self._client_(), record["op"]
        if op == "params":
            items = [Param(k, v) for k, v in record["items"].items()]
            for i in range(0, len(items), _BATCH):
                client.log_batch(self.run_id, params=items[i : i + _BATCH])
        elif op == "metrics":
            items = [Metric(k, v, ts, step) for k, v, ts, step in record["items"]]
            for i in range(0, len(items), 1000):
                client.log_batch(self.run_id, metrics=items[i : i + 1000])
        elif op == "tags":
            items = [RunTag(k, v) for k, v in record["items"].items()]
            for i in range(0, len(items), _BATCH):
                client.log_batch(self.run_id, tags=items[i : i + _BATCH])
        elif op == "text":
            client.log_text(self.run_id, record["text"], record["artifact_file"])
        elif op == "file":
            local = self._image_file(record)
            if local is None:
                log.warning("image %s is gone; not delivered", record["local"])
                return
            client.log_artifact(self.run_id, str(local), record.get("artifact_path"))
            self._keep_delivered(local)
        elif op == "status":
            client.set_terminated(self.run_id, status=record["status"])
        else:
            log.warning("unknown tracking record %r ignored", op)

    def _journal_copy(self, local: Path) -> Path | None:
        """Where an image of ``tracking-buffer/`` goes once delivered (None for a file
        elsewhere)."""
        try:
            return self.layout.tracking_journal_dir / local.relative_to(
                self.layout.tracking_buffer_dir)
        except ValueError:
            return None

    def _image_file(self, record: Mapping[str, Any]) -> Path | None:
        """The file of an image record: in ``tracking-buffer/`` while undelivered, in
        ``tracking-journal/`` once delivered (a rebuild sends it again from there); None where
        it is in neither."""
        local = Path(record["local"])
        if local.is_file():
            return local
        kept = self._journal_copy(local)
        return kept if kept is not None and kept.is_file() else None

    def _keep_delivered(self, local: Path) -> None:
        """Move a delivered image from ``RUN_DIR/tracking-buffer/`` to
        ``RUN_DIR/tracking-journal/`` (same relative path), so that the buffer folder holds
        only what is still to be delivered and the journal keeps every image for a rebuild.
        The image's own folder (:meth:`log_image` gives each image one) is removed once empty;
        the buffer folder itself stays (another process of the run may be writing into it). A
        file that cannot be moved is left, with a warning."""
        kept = self._journal_copy(local)
        if kept is None:
            return
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, kept)
        except OSError as exc:
            log.warning("delivered image %s not moved to %s: %s", local, kept.parent, exc)
            return
        try:
            local.parent.rmdir()
        except OSError:  # not empty: not a folder of ours alone
            pass

    def flush(self) -> int:
        """Deliver everything buffered now (ignoring the cool-down). Returns the number of
        records delivered; raises when the server cannot be reached (``segctl sync``)."""
        self._quiet_until = 0.0
        if self.run_id is None and (self.pending() or self.journal_path.is_file()
                                    or self.layout.mlflow_run_id.is_file()):
            self._ready()  # raises when the server cannot be reached
        return self._replay()

    # --- logging ----------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log string params (values longer than MLflow's 6000 characters are cut)."""
        items = {sanitize_name(k): str(v)[:6000] for k, v in params.items()}
        self._record({"op": "params", "items": items}, "log_params")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log float metrics at ``step`` (an iteration); non-finite values are skipped."""
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        items = [
            [sanitize_name(k), float(v), now, int(step)]
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        self._max_step = max(self._max_step, int(step))
        for key in self._history:
            if key in metrics and metrics[key] is not None and math.isfinite(float(metrics[key])):
                self._history[key].append((int(step), float(metrics[key])))
        self._record({"op": "metrics", "items": items}, "log_metrics")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set string tags on the run."""
        self._record({"op": "tags", "items": {k: str(v) for k, v in tags.items()}}, "set_tags")

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file`` (a relative path, e.g. ``a/b.txt``)."""
        self._record({"op": "text", "text": text, "artifact_file": artifact_file}, "log_text")

    def log_image(self, png: bytes, artifact_file: str) -> None:
        """Store PNG bytes as the artifact ``artifact_file``. The bytes wait in a file under
        ``RUN_DIR/tracking-buffer/`` until they are delivered (at once, by a later replay or
        by ``segctl sync``), which moves the file to ``RUN_DIR/tracking-journal/``."""
        if not self.enabled:
            return
        folder, _, name = artifact_file.rpartition("/")
        local = self.layout.tracking_buffer_dir / secrets.token_hex(4) / name
        try:
            atomic_write(local, lambda handle: handle.write(png))
        except OSError as exc:
            log.warning("cannot keep image %s: %s", artifact_file, exc)
            return
        self._record({"op": "file", "local": str(local), "artifact_path": folder or None},
                     "log_image")

    def close(self, status: str = "FINISHED",
              images: Mapping[str, bytes | None] | None = None) -> None:
        """Log the end-of-run record and mark the run ``FINISHED``, ``FAILED`` or ``KILLED``
        (a resumed run reopens it). Tries the server once more even while cooling down;
        whatever is still not delivered stays in the buffer for ``segctl sync``.

        ``images``: ``{artifact file: PNG bytes}`` logged with the end-of-run record (the
        learning curve of :func:`trainer.visuals.learning_curve_png`); None values are
        skipped."""
        if not self.enabled:
            return
        self._closed = True
        self._stop_system_metrics()
        self._quiet_until = 0.0
        if self.recipe is not None:
            self._end_of_run_record()
        for artifact_file, png in (images or {}).items():
            if png is not None:
                self.log_image(png, artifact_file)
        if self.run_id is None and not self.buffer_path.is_file():
            return  # nothing was ever logged
        self._record({"op": "status", "status": status}, "close")

    def _end_of_run_record(self) -> None:
        recipe = self.recipe
        cluster = recipe.cluster
        gpus, cores = self.devices or (cluster.nodes * cluster.gpus_per_node, 0)
        hours = (time.monotonic() - self._started) / 3600.0
        summary = {
            names.GPU_HOURS: self._previous[names.GPU_HOURS] + hours * gpus,
            names.ITERATIONS_DONE: float(max(self._max_step,
                                             self._previous[names.ITERATIONS_DONE])),
        }
        if gpus == 0 and cores:
            summary[names.CORE_HOURS] = self._previous[names.CORE_HOURS] + hours * cores
        self._record({"op": "metrics", "items": [
            [k, v, int(time.time() * 1000), self._max_step] for k, v in summary.items()
        ]}, "log_metrics")
        self._record({"op": "text", "artifact_file": names.RECIPE_ARTIFACT,
                      "text": json.dumps(redact(recipe.model_dump(mode="json")), indent=2)},
                     "log_text")
        final = self.layout.final
        if final.is_file():
            where = str(final)
            if recipe.train.checkpoint_dir:
                where = recipe.train.checkpoint_dir.rstrip("/") + "/" + final.name
            self.set_tags({names.FINAL_CHECKPOINT: where})


def devices_in_use(accelerator) -> tuple[int, int]:
    """``(GPUs, CPU cores)`` a job computes on: one GPU per process on CUDA devices, else none;
    the CPU cores each process may run on (its CPU affinity) times the processes."""
    processes = int(accelerator.num_processes)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity where the platform lacks it
        cores = os.cpu_count() or 1
    gpus = processes if accelerator.device.type == "cuda" else 0
    return gpus, processes * cores


#: MLflow's bound on a tag value is 8,000 characters; overrides are cut well before.
OVERRIDES_TAG_CHARS = 5000


def run_tags(recipe: Recipe, *, executor: str, job_id: str, gpus: int | None = None,
             run_dir: str | Path | None = None) -> dict[str, str]:
    """The ``segctl.*`` tags of a run: recipe hash, run id, executor, job id, placement
    (nodes; ``gpus``, the GPUs the job computes on, 0 on CPUs, by default the recipe's
    ``cluster.nodes * cluster.gpus_per_node``; the Slurm job and node list when inside Slurm),
    git commit, version, and the overrides in ``run_dir``'s ``overrides.json`` where there are
    any (:mod:`segctl.recipe.overrides`)."""
    from segctl.recipe import recipe_hash, run_id
    from segctl.recipe.overrides import read_overrides

    cluster = recipe.cluster
    tags = {
        names.RECIPE_HASH: recipe_hash(recipe),
        names.RUN_ID: run_id(recipe),
        names.EXECUTOR: executor,
        names.JOB_ID: job_id,
        names.VERSION: segctl_version(),
        names.NODES: str(cluster.nodes),
        names.GPUS: str(cluster.nodes * cluster.gpus_per_node if gpus is None else gpus),
    }
    overrides = " ".join(read_overrides(run_dir)) if run_dir is not None else ""
    if overrides:
        tags[names.OVERRIDES] = overrides[:OVERRIDES_TAG_CHARS]
    slurm = {names.SLURM_JOB_ID: "SLURM_JOB_ID", names.SLURM_NODELIST: "SLURM_JOB_NODELIST"}
    tags.update({tag: os.environ[var] for tag, var in slurm.items() if os.environ.get(var)})
    commit = git_commit()
    if commit:
        tags[names.GIT_COMMIT] = commit
    return tags


def metrics_in_percent(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """``SegMetrics.to_dict`` values (fractions) as percent, keys prefixed with ``prefix``.

    Only ``aAcc``, ``mIoU``, ``mAcc`` and ``IoU.<class>`` are kept (per-class accuracy is in the
    text table).
    """
    keep = {
        k: v for k, v in metrics.items()
        if k in names.SCORES or k.startswith(names.CLASS_IOU_PREFIX)
    }
    return {f"{prefix}{k}": v * 100.0 for k, v in keep.items()}
