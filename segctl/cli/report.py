"""``segctl report``: published against reproduced mIoU, per recipe, from what MLflow holds.

The report answers from an index it keeps (:mod:`segctl.report_index`,
``$SEGCTL_HOME/report-index.db``) and reads MLflow only for what the index lacks
(:func:`refresh`): nothing at all while an embedded SQLite store is unchanged since the last
report; otherwise the runs that ended since then or are running (filtered searches; a margin of
:data:`CLOCK_MARGIN_MS` covers the clocks of the nodes that ended them), the runs
``segctl sync`` changed, and the deleted runs to drop. A store
that is new to the index, or replaced (an experiment id with another creation time), is read
whole, as ``--rebuild-index`` asks.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from segctl.cli.common import UserError, user_errors

COLUMNS = (
    ("dataset", "Dataset"),
    ("recipe", "Recipe"),
    ("kind", "Weights"),
    ("model", "Model"),
    ("published_ss", "mIoU ss (published)"),
    ("reproduced_ss", "mIoU ss (best reproduced)"),
    ("delta_ss", "Δ ss"),
    ("published_ms_flip", "mIoU ms+flip (published)"),
    ("reproduced_ms_flip", "mIoU ms+flip (best reproduced)"),
    ("delta_ms_flip", "Δ ms+flip"),
    ("schedule", "Iterations done/planned"),
    ("gpu_hours", "GPU×hours"),
    ("runs", "Runs"),
    ("link", "Best run"),
)


#: ``ReportRow.kind`` of runs trained by segctl, and of the recipe's published trained model
#: scored by ``segctl eval --published`` (metrics ``published/<mode>/mIoU``).
REPRODUCED, PUBLISHED = "reproduced", "published checkpoint"

#: The params and metrics of a run that the report reads (all the index keeps of a run).
REPORT_PARAMS = ("name", "data.dataset", "model.name", "eval.ms_flip", "schedule.max_iters",
                 "reference.miou_ss", "reference.miou_ms_flip", "reference.split",
                 "reference.source")
REPORT_METRICS = ("loss", "mIoU", "eval/ss/mIoU", "eval/ms_flip/mIoU", "published/ss/mIoU",
                  "published/ms_flip/mIoU", "iterations_done", "gpu_hours")
#: Runs that ended this long (ms) before the previous refresh are read again: the end times
#: come from the clocks of the nodes that ran the jobs.
CLOCK_MARGIN_MS = 10 * 60 * 1000
_SEGCTL_RUNS = "tags.`segctl.recipe_hash` LIKE '%'"


@dataclass
class ReportRow:
    """One recipe (one ``segctl.recipe_hash``) and kind of weights: the published mIoU beside
    the best one measured. ``kind`` is :data:`REPRODUCED` or :data:`PUBLISHED`; deltas are None
    where the published figure is a test-server score (``reference_split`` ``test``)."""

    dataset: str
    recipe: str
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
    gpu_hours: float
    runs: int
    mlflow_run_id: str
    link: str
    source: str | None
    reference_split: str = "val"

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
        return metrics.get(f"published/{mode}/mIoU")
    values = [metrics.get(f"eval/{mode}/mIoU")]
    if (params.get("eval.ms_flip") == "True") == (mode == "ms_flip"):
        values.append(metrics.get("mIoU"))
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
    when that cannot be written) after :func:`refresh` (``rebuild``: read every run again).

    Raises:
        Whatever MLflow raises when the store cannot be read.
    """
    import sqlite3

    from segctl.report_index import ReportIndex

    try:
        with ReportIndex.open(index_path) as index:
            refresh(index, uri, rebuild=rebuild)
            runs = index.runs(uri, dataset)
    except (OSError, sqlite3.Error) as exc:  # the index's file, not MLflow
        typer.echo(f"warning: report index not kept ({exc}); reading every run from MLflow",
                   err=True)
        with ReportIndex.open(":memory:") as index:
            refresh(index, uri, rebuild=True)
            runs = index.runs(uri, dataset)
    return rows_of(uri, runs)


def rows_of(uri: str, runs: list) -> list[ReportRow]:
    """The report rows of ``runs`` (MLflow runs, or :class:`segctl.report_index.IndexedRun`)
    of the store at ``uri``, grouped by recipe hash, sorted by dataset, model, recipe, kind."""
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(run.data.tags["segctl.recipe_hash"], []).append(run)
    rows = []
    for recipe_hash, members in groups.items():
        published = any(_reproduced(r, m, PUBLISHED) is not None
                        for r in members for m in ("ss", "ms_flip"))
        if not published or any(_trained(r) for r in members):
            rows.append(_row(uri, recipe_hash, members, REPRODUCED))
        if published:
            rows.append(_row(uri, recipe_hash, members, PUBLISHED))
    return sorted(rows, key=lambda r: (r.dataset, r.model, r.recipe, r.kind != REPRODUCED))


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
    fields = fields_key(REPORT_PARAMS, REPORT_METRICS)
    stale = index.stale(uri)
    if (not rebuild and state is not None and stamp is not None and stamp == state.stamp
            and state.fields == fields and not stale):
        return "none"

    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    started = int(time.time() * 1000)
    experiments = experiments_map(_all_pages(client.search_experiments))

    def indexed(runs) -> list[IndexedRun]:
        return [IndexedRun.from_mlflow(r, REPORT_PARAMS, REPORT_METRICS) for r in runs]

    def search(experiment_ids: list[str], extra: str = "", view=ViewType.ACTIVE_ONLY) -> list:
        if not experiment_ids:
            return []
        where = _SEGCTL_RUNS + (f" and {extra}" if extra else "")
        return _all_pages(lambda **kw: client.search_runs(
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
        if run.info.lifecycle_stage == "active" and "segctl.recipe_hash" in run.data.tags:
            found[run_id] = run
        else:
            gone.append(run_id)
    index.save(uri, new_state, indexed(found.values()), remove=gone, read_again=stale,
               experiments_gone=[eid for eid in state.experiments if eid not in experiments])
    return "changed"


def _all_pages(search) -> list:
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
    return any(key in metrics for key in ("loss", "mIoU", "eval/ss/mIoU", "eval/ms_flip/mIoU"))


def _row(uri: str, recipe_hash: str, runs: list, kind: str) -> ReportRow:
    """The :class:`ReportRow` of one recipe's runs for one kind of weights."""
    best = max(runs, key=lambda r: (_reproduced(r, "ss", kind) or -1,
                                    _reproduced(r, "ms_flip", kind) or -1))
    params = best.data.params
    ss = _best([_reproduced(r, "ss", kind) for r in runs])
    ms = _best([_reproduced(r, "ms_flip", kind) for r in runs])
    pub_ss = _number(params.get("reference.miou_ss"))
    pub_ms = _number(params.get("reference.miou_ms_flip"))
    split = params.get("reference.split") or "val"
    comparable = split == "val"
    done = best.data.metrics.get("iterations_done")
    planned = _number(params.get("schedule.max_iters"))
    return ReportRow(
        dataset=params.get("data.dataset", "?"),
        recipe=params.get("name", best.info.run_name or "?"),
        kind=kind,
        model=params.get("model.name", "?"),
        recipe_hash=recipe_hash,
        published_ss=pub_ss,
        reproduced_ss=ss,
        delta_ss=None if ss is None or pub_ss is None or not comparable else round(ss - pub_ss, 2),
        published_ms_flip=pub_ms,
        reproduced_ms_flip=ms,
        delta_ms_flip=(None if ms is None or pub_ms is None or not comparable
                       else round(ms - pub_ms, 2)),
        iterations_done=None if done is None or kind == PUBLISHED else int(done),
        iterations_planned=None if planned is None else int(planned),
        gpu_hours=(0.0 if kind == PUBLISHED
                   else round(sum(r.data.metrics.get("gpu_hours", 0.0) for r in runs), 3)),
        runs=len(runs),
        mlflow_run_id=best.info.run_id,
        link=run_link(uri, best.info.experiment_id, best.info.run_id),
        source=_source(params),
        reference_split=split,
    )


def _source(params: dict[str, str]) -> str | None:
    value = params.get("reference.source")
    return None if value in (None, "None") else value


def _cell(row: ReportRow, key: str) -> str:
    value: Any = row.schedule if key == "schedule" else getattr(row, key)
    if value is None:
        return "–"
    if key.startswith("published_") and row.reference_split != "val":
        return f"{value:.2f} ({row.reference_split} server)"
    if isinstance(value, float):
        return f"{value:+.2f}" if key.startswith("delta") else f"{value:.2f}"
    return str(value)


def render_markdown(rows: list[ReportRow]) -> str:
    """One table per dataset, shaped like the published tables."""
    out = []
    for dataset in sorted({r.dataset for r in rows}):
        out.append(f"## {dataset}\n")
        keys = [k for k, _ in COLUMNS if k != "dataset"]
        out.append("| " + " | ".join(t for k, t in COLUMNS if k != "dataset") + " |")
        out.append("|" + "|".join("---" for _ in keys) + "|")
        for row in (r for r in rows if r.dataset == dataset):
            out.append("| " + " | ".join(_cell(row, k).replace("|", "\\|") for k in keys) + " |")
        out.append("")
    return "\n".join(out)


def render_csv(rows: list[ReportRow]) -> str:
    buffer = io.StringIO()
    fields = list(asdict(rows[0]) if rows else [k for k, _ in COLUMNS])
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return buffer.getvalue()


@user_errors
def report(
    output_format: Annotated[
        str, typer.Option("--format", help="md (tables per dataset), csv or json.")
    ] = "md",
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only this dataset.")] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow store (default MLFLOW_TRACKING_URI, else ./mlflow.db)."),
    ] = None,
    rebuild_index: Annotated[
        bool,
        typer.Option("--rebuild-index",
                     help="Read every run from MLflow again, not only new and changed ones."),
    ] = False,
) -> None:
    """Published against best reproduced mIoU per recipe, grouped by dataset.

    Single scale and multi-scale + flip, the difference, the schedule trained, GPU×hours and a
    link to the best run, from the runs segctl logged to MLflow (through an index kept in
    $SEGCTL_HOME/report-index.db: only new and changed runs are read from MLflow).
    """
    from segctl.paths import default_tracking_uri
    from segctl.recipe.secrets import redact_url_credentials
    from segctl.tracking_store import ensure_store as ensure_tracking_store

    if output_format not in ("md", "csv", "json"):
        raise UserError(f"--format must be md, csv or json, got {output_format!r}")
    uri = tracking_uri or default_tracking_uri()
    ensure_tracking_store(uri)  # an embedded store: created once, under a lock
    try:
        rows = collect(uri, dataset, rebuild=rebuild_index)
    except Exception as exc:
        raise UserError(redact_url_credentials(
            f"cannot read MLflow at {uri}: {type(exc).__name__}: {exc}")) from None
    if output_format == "json":
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
    elif output_format == "csv":
        typer.echo(render_csv(rows), nl=False)
    elif not rows:
        typer.echo("no segctl runs found in " + redact_url_credentials(uri))
    else:
        typer.echo(render_markdown(rows))
