"""What the control plane reads back from MLflow and delivers to it: the report's rows and
``segctl sync``. The CLI (:mod:`segctl.cli.report`, :mod:`segctl.cli.sync`) only renders.

The names of tags, params and metrics are those the trainer writes
(:mod:`segctl.recipe.tracking_names`); :data:`REPORT_PARAMS`, :data:`REPORT_METRICS` and
:data:`REPORT_TAGS` are the ones the report reads.

The report answers from an index it keeps (:mod:`segctl.report_index`,
``$SEGCTL_HOME/report-index.db``) and reads MLflow only for what the index lacks
(:func:`refresh`): nothing at all while an embedded SQLite store is unchanged since the last
report; otherwise the runs that ended since then or are running (filtered searches; a margin of
:data:`CLOCK_MARGIN_MS` covers the clocks of the nodes that ended them), the runs
``segctl sync`` changed, and the deleted runs to drop. A store that is new to the index, or
replaced (an experiment id with another creation time), is read whole, as ``--rebuild-index``
asks.

MLflow (and, for sync, the trainer's tracker) is imported inside the functions that use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from segctl.recipe import tracking_names as names

#: ``ReportRow.kind`` of runs trained by segctl, and of the recipe's published trained model
#: scored by ``segctl eval --published`` (metrics ``published/<mode>/mIoU``).
REPRODUCED, PUBLISHED = "reproduced", "published checkpoint"

#: The params and metrics of a run that the report reads (all the index keeps of a run).
REPORT_PARAMS = (names.NAME, names.DATASET, names.MODEL, names.EVAL_MS_FLIP, names.MAX_ITERS,
                 names.REFERENCE_MIOU_SS, names.REFERENCE_MIOU_MS_FLIP, names.REFERENCE_SPLIT,
                 names.REFERENCE_SOURCE)
REPORT_METRICS = (names.LOSS, names.MIOU, names.eval_miou("ss"), names.eval_miou("ms_flip"),
                  names.eval_miou("ss", published=True),
                  names.eval_miou("ms_flip", published=True),
                  names.ITERATIONS_DONE, names.GPU_HOURS, names.CORE_HOURS,
                  names.PUBLISHED_CURVE_MIOU)
#: The tags of a run that the report reads besides ``segctl.recipe_hash``.
REPORT_TAGS = (names.RUN_ID, names.OVERRIDES, names.GPUS, names.BEHIND_PUBLISHED)
#: Metrics only a run that trained (or evaluated segctl's own weights) has.
TRAINED_METRICS = (names.LOSS, names.MIOU, names.eval_miou("ss"), names.eval_miou("ms_flip"))
#: Runs that ended this long (ms) before the previous refresh are read again: the end times
#: come from the clocks of the nodes that ran the jobs.
CLOCK_MARGIN_MS = 10 * 60 * 1000
#: The MLflow search filter of the runs segctl logged.
SEGCTL_RUNS = f"tags.`{names.RECIPE_HASH}` LIKE '%'"


@dataclass
class ReportRow:
    """One segctl run (one ``segctl.run_id``: a recipe, or one of its ``--set`` variants) and
    kind of weights: the published mIoU beside the best one measured. ``kind`` is
    :data:`REPRODUCED` or :data:`PUBLISHED`; deltas are None where the published figure is a
    test-server score (``reference_split`` ``test``).

    ``run_id`` is segctl's run id (None for MLflow runs logged without one), ``overrides`` how
    the run differs from its recipe file (the ``segctl.overrides`` tag: ``a.b=value`` items
    separated by spaces, ``""`` for none). ``gpu_hours`` is set where the run's jobs computed
    on GPUs (``segctl.gpus`` above 0), ``core_hours`` (CPU cores x hours) where they computed
    on CPUs only; the other is None, and both are None for a published checkpoint (nothing
    trained). ``runs`` counts the MLflow runs of the segctl run (normally 1).

    ``curve_miou`` is the final mIoU of the published training curve the run was compared
    with while it trained (``reference.log``), ``fell_behind`` whether it ever fell behind
    that curve (:mod:`trainer.published_guard`); both None without a comparison."""

    dataset: str
    recipe: str
    run_id: str | None
    overrides: str
    kind: str
    model: str
    recipe_hash: str
    published_ss: float | None
    reproduced_ss: float | None
    delta_ss: float | None
    published_ms_flip: float | None
    reproduced_ms_flip: float | None
    delta_ms_flip: float | None
    iterations_done: int | None
    iterations_planned: int | None
    gpu_hours: float | None
    core_hours: float | None
    runs: int
    mlflow_run_id: str
    link: str
    source: str | None
    reference_split: str = "val"
    curve_miou: float | None = None
    fell_behind: bool | None = None

    @property
    def schedule(self) -> str:
        done = "?" if self.iterations_done is None else str(self.iterations_done)
        planned = "?" if self.iterations_planned is None else str(self.iterations_planned)
        return f"{done}/{planned}"


def _number(text: str | None) -> float | None:
    try:
        return None if text in (None, "", "None") else float(text)
    except ValueError:
        return None


def _best(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return max(found) if found else None


def _reproduced(run, mode: Literal["ss", "ms_flip"], kind: str = REPRODUCED) -> float | None:
    """mIoU of a run in a test mode. Reproduced: ``eval/<mode>/mIoU`` (segctl eval), or the
    training-time ``mIoU`` when the recipe evaluates in that mode (``eval.ms_flip``). Published
    checkpoint: ``published/<mode>/mIoU`` (segctl eval --published)."""
    metrics, params = run.data.metrics, run.data.params
    if kind == PUBLISHED:
        return metrics.get(names.eval_miou(mode, published=True))
    values = [metrics.get(names.eval_miou(mode))]
    if (params.get(names.EVAL_MS_FLIP) == "True") == (mode == "ms_flip"):
        values.append(metrics.get(names.MIOU))
    return _best(values)


def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """A browser link for HTTP servers; ``<uri> run <id>`` for other stores (credentials in
    the URI hidden)."""
    from segctl.recipe.secrets import redact_url_credentials

    uri = redact_url_credentials(uri)
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{uri} run {run_id}"


def collect(uri: str, dataset: str | None = None, *, index_path: str | Path | None = None,
            rebuild: bool = False) -> list[ReportRow]:
    """One :class:`ReportRow` per recipe hash found in the MLflow store at ``uri``, from the
    report index at ``index_path`` (default ``$SEGCTL_HOME/report-index.db``; one in memory
    when that cannot be written, with a warning on stderr) after :func:`refresh`
    (``rebuild``: read every run again).

    Raises:
        Whatever MLflow raises when the store cannot be read.
    """
    import sqlite3
    import sys

    from segctl.report_index import ReportIndex

    try:
        with ReportIndex.open(index_path) as index:
            refresh(index, uri, rebuild=rebuild)
            runs = index.runs(uri, dataset)
    except (OSError, sqlite3.Error) as exc:  # the index's file, not MLflow
        print(f"warning: report index not kept ({exc}); reading every run from MLflow",
              file=sys.stderr)
        with ReportIndex.open(":memory:") as index:
            refresh(index, uri, rebuild=True)
            runs = index.runs(uri, dataset)
    return rows_of(uri, runs)


def rows_of(uri: str, runs: list) -> list[ReportRow]:
    """The report rows of ``runs`` (MLflow runs, or :class:`segctl.report_index.IndexedRun`)
    of the store at ``uri``, one per segctl run id (recipe hash where a run has none) and kind
    of weights, sorted by dataset, then best first (:func:`best_first`)."""
    groups: dict[str, list] = {}
    for run in runs:
        tags = run.data.tags
        groups.setdefault(tags.get(names.RUN_ID) or tags[names.RECIPE_HASH], []).append(run)
    rows = []
    for members in groups.values():
        published = any(_reproduced(r, m, PUBLISHED) is not None
                        for r in members for m in names.MODES)
        if not published or any(_trained(r) for r in members):
            rows.append(_row(uri, members, REPRODUCED))
        if published:
            rows.append(_row(uri, members, PUBLISHED))
    return sorted(rows, key=lambda r: (r.dataset, *best_first(r)))


def best_first(row: ReportRow) -> tuple:
    """A sort key putting the best ``row`` first: by single-scale mIoU, then multi-scale +
    flip mIoU, descending; rows without a score last; then by run id and kind."""
    ss, ms = row.reproduced_ss, row.reproduced_ms_flip
    return (ss is None, -(ss or 0.0), ms is None, -(ms or 0.0), row.run_id or row.recipe,
            row.kind != REPRODUCED)


def refresh(index, uri: str, *, rebuild: bool = False) -> str:
    """Bring ``index`` (a :class:`segctl.report_index.ReportIndex`) up to date with the MLflow
    store at ``uri``, reading as little as it can (see the module text).

    Returns:
        What was read: ``"none"`` (an unchanged embedded store: MLflow not even imported),
        ``"changed"`` (new, changed and deleted runs) or ``"all"``.

    Raises:
        Whatever MLflow raises when the store cannot be read (the index is left as it was).
    """
    from segctl.report_index import (
        IndexedRun, StoreState, changed_store, experiments_map, fields_key, store_stamp,
    )

    stamp = store_stamp(uri)
    state = index.store(uri)
    fields = fields_key(REPORT_PARAMS, REPORT_METRICS, REPORT_TAGS)
    stale = index.stale(uri)
    if (not rebuild and state is not None and stamp is not None and stamp == state.stamp
            and state.fields == fields and not stale):
        return "none"

    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    started = int(time.time() * 1000)
    experiments = experiments_map(all_pages(client.search_experiments))

    def indexed(runs) -> list[IndexedRun]:
        return [IndexedRun.from_mlflow(r, REPORT_PARAMS, REPORT_METRICS, REPORT_TAGS)
                for r in runs]

    def search(experiment_ids: list[str], extra: str = "", view=ViewType.ACTIVE_ONLY) -> list:
        if not experiment_ids:
            return []
        where = SEGCTL_RUNS + (f" and {extra}" if extra else "")
        return all_pages(lambda **kw: client.search_runs(
            experiment_ids, filter_string=where, run_view_type=view, **kw))

    new_state = StoreState(started, experiments, fields, stamp)
    whole = (rebuild or state is None or state.fields != fields
             or changed_store(state.experiments, experiments))
    if whole:
        index.save(uri, new_state, indexed(search(list(experiments))), replace=True)
        return "all"
    known = [eid for eid in experiments if eid in state.experiments]
    new = [eid for eid in experiments if eid not in state.experiments]  # read whole
    since = state.refreshed_ms - CLOCK_MARGIN_MS
    found = {run.info.run_id: run for run in search(new)}
    # a run started since then is running or ended since then (end time >= start time)
    for condition in (f"attributes.end_time >= {since}", "attributes.status = 'RUNNING'"):
        found.update((run.info.run_id, run) for run in search(known, condition))
    gone = [run.info.run_id for run in search(list(experiments), view=ViewType.DELETED_ONLY)]
    for run_id in stale:
        if run_id in found:
            continue
        try:
            run = client.get_run(run_id)
        except MlflowException:
            gone.append(run_id)
            continue
        if run.info.lifecycle_stage == "active" and names.RECIPE_HASH in run.data.tags:
            found[run_id] = run
        else:
            gone.append(run_id)
    index.save(uri, new_state, indexed(found.values()), remove=gone, read_again=stale,
               experiments_gone=[eid for eid in state.experiments if eid not in experiments])
    return "changed"


def all_pages(search) -> list:
    """Every item of a paged MLflow search (``search(max_results=, page_token=)``)."""
    items, token = [], None
    while True:
        page = search(max_results=1000, page_token=token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _trained(run) -> bool:
    """Whether segctl trained (or evaluated its own weights) in this MLflow run, as opposed to
    only scoring the published checkpoint."""
    metrics = run.data.metrics
    return any(key in metrics for key in TRAINED_METRICS)


def _on_gpus(run) -> bool:
    """Whether a run's jobs computed on GPUs: its ``segctl.gpus`` tag is above 0 (a run
    logged without the tag: whether it has GPU-hours)."""
    gpus = _number(run.data.tags.get(names.GPUS))
    if gpus is None:
        return bool(run.data.metrics.get(names.GPU_HOURS))
    return gpus > 0


def _hours(runs: list, key: str) -> float | None:
    """The sum of the metric ``key`` over ``runs`` (3 decimals); None where none has it."""
    values = [r.data.metrics[key] for r in runs if key in r.data.metrics]
    return round(sum(values), 3) if values else None


def _row(uri: str, runs: list, kind: str) -> ReportRow:
    """The :class:`ReportRow` of one segctl run's MLflow runs for one kind of weights."""
    best = max(runs, key=lambda r: (_reproduced(r, "ss", kind) or -1,
                                    _reproduced(r, "ms_flip", kind) or -1))
    params, tags = best.data.params, best.data.tags
    on_gpus = any(_on_gpus(r) for r in runs)
    trained = kind != PUBLISHED
    ss = _best([_reproduced(r, "ss", kind) for r in runs])
    ms = _best([_reproduced(r, "ms_flip", kind) for r in runs])
    pub_ss = _number(params.get(names.REFERENCE_MIOU_SS))
    pub_ms = _number(params.get(names.REFERENCE_MIOU_MS_FLIP))
    split = params.get(names.REFERENCE_SPLIT) or "val"
    comparable = split == "val"
    done = best.data.metrics.get(names.ITERATIONS_DONE)
    planned = _number(params.get(names.MAX_ITERS))
    return ReportRow(
        dataset=params.get(names.DATASET, "?"),
        recipe=params.get(names.NAME, best.info.run_name or "?"),
        run_id=tags.get(names.RUN_ID),
        overrides=tags.get(names.OVERRIDES, ""),
        kind=kind,
        model=params.get(names.MODEL, "?"),
        recipe_hash=tags[names.RECIPE_HASH],
        published_ss=pub_ss,
        reproduced_ss=ss,
        delta_ss=None if ss is None or pub_ss is None or not comparable else round(ss - pub_ss, 2),
        published_ms_flip=pub_ms,
        reproduced_ms_flip=ms,
        delta_ms_flip=(None if ms is None or pub_ms is None or not comparable
                       else round(ms - pub_ms, 2)),
        iterations_done=None if done is None or kind == PUBLISHED else int(done),
        iterations_planned=None if planned is None else int(planned),
        gpu_hours=(round(sum(r.data.metrics.get(names.GPU_HOURS, 0.0) for r in runs), 3)
                   if trained and on_gpus else None),
        core_hours=_hours(runs, names.CORE_HOURS) if trained and not on_gpus else None,
        runs=len(runs),
        mlflow_run_id=best.info.run_id,
        link=run_link(uri, best.info.experiment_id, best.info.run_id),
        source=_source(params),
        reference_split=split,
        curve_miou=best.data.metrics.get(names.PUBLISHED_CURVE_MIOU) if trained else None,
        fell_behind=({"true": True, "false": False}.get(tags.get(names.BEHIND_PUBLISHED, ""))
                     if trained else None),
    )


def _source(params: dict[str, str]) -> str | None:
    value = params.get(names.REFERENCE_SOURCE)
    return None if value in (None, "None") else value


# --- segctl sync --------------------------------------------------------------------------------


class SyncError(Exception):
    """``segctl sync`` cannot deliver: no run directory, a missing variable of the tracking
    URI's credentials, or MLflow unreachable (the message says which, without secrets)."""


@dataclass(frozen=True)
class SyncOutcome:
    """What :func:`sync_run` did.

    Attributes:
        run: the run directory's name.
        uri: the tracking URI, credentials hidden.
        mlflow_run_id: the MLflow run delivered to (None: nothing was ever logged).
        sent: buffered records delivered.
        rebuilt: journal records replayed into a new MLflow run when the known one was gone
            (None: no rebuild); lost_run_id: the id of the lost run then.
        journal: the journal file a rebuild read.
        nothing: nothing was waiting (no buffer, the MLflow run exists).
    """

    run: str
    uri: str
    mlflow_run_id: str | None
    sent: int
    rebuilt: int | None
    lost_run_id: str | None
    journal: Path
    nothing: bool


def sync_run(run_dir: str | Path) -> SyncOutcome:
    """Deliver ``RUN_DIR/tracking-buffer.jsonl`` to the run's MLflow run (records keep their
    steps and timestamps; delivered ones leave the buffer, delivered images leave
    ``RUN_DIR/tracking-buffer/``), or rebuild the run from
    ``RUN_DIR/tracking-journal.jsonl`` into a new MLflow run when its store lost it; then mark
    the runs changed in the report index, so the next report reads them again.

    The credentials of ``tracking.uri`` travel as ``${VAR}`` references: the variables must be
    set here (:func:`segctl.recipe.secrets.fill_url_references`).

    Raises:
        SyncError: see :class:`SyncError`.
    """
    from segctl.recipe import parse_json_recipe
    from segctl.recipe.rundir import RunDir
    from segctl.recipe.secrets import (
        MissingSecretError, fill_url_references, redact_url_credentials,
    )
    from trainer.tracking import Tracker

    layout = RunDir(run_dir)
    try:
        recipe = parse_json_recipe(layout.recipe.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SyncError(f"{layout.path} is not a run directory (no {layout.RECIPE})") from None
    if recipe.tracking.uri:  # credentials of the tracking URI travel as ${VAR} references
        try:
            uri = fill_url_references(recipe.tracking.uri)
        except MissingSecretError as exc:
            raise SyncError(f"tracking.uri of {layout.name}: {exc}") from None
        recipe = recipe.model_copy(update={"tracking": recipe.tracking.model_copy(
            update={"uri": uri})})
    tracker = Tracker.for_recipe(layout.path, recipe, cooldown_s=0.0, reopen=False,
                                 system_metrics=False)
    where = redact_url_credentials(tracker.uri)

    def outcome(sent: int, nothing: bool) -> SyncOutcome:
        return SyncOutcome(layout.name, where, tracker.run_id, sent, tracker.rebuilt,
                           tracker.lost_run_id, tracker.journal_path, nothing)

    if tracker.run_id is not None and not tracker.pending() and tracker.rebuilt is None:
        return outcome(0, nothing=True)
    try:
        sent = tracker.flush()
    except Exception as exc:
        raise SyncError(
            f"MLflow at {where} not reachable ({type(exc).__name__}); {tracker.pending()} "
            f"records still buffered in {tracker.buffer_path}"
        ) from None
    if tracker.run_id is None:
        return outcome(sent, nothing=True)
    mark_changed(tracker.uri, [tracker.run_id]
                 + ([tracker.lost_run_id] if tracker.lost_run_id else []))
    return outcome(sent, nothing=False)


def mark_changed(uri: str, run_ids: list[str]) -> None:
    """Tell the report index that ``run_ids`` changed (or are gone), so the next
    ``segctl report`` reads them again; an index that cannot be opened is left alone."""
    from segctl.report_index import ReportIndex

    try:
        with ReportIndex.open() as index:
            index.mark_stale(uri, run_ids)
    except OSError:
        pass
