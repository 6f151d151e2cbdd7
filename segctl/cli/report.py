"""``segctl report``: published against reproduced mIoU, per run, from what MLflow holds.

The rows come from :mod:`segctl.tracking_query` (which reads MLflow through the report index,
as little as it can): one per segctl run (a recipe and each of its ``--set`` variants) and
kind of weights, best first. This module renders them as Markdown tables, CSV or JSON.

Compute is GPU-hours for runs whose jobs computed on GPUs and CPU core-hours for runs that
computed on CPUs only: one Markdown column, ``Compute``, whose cells carry the unit
(``1.25 GPU×h``, ``0.042 core×h``); CSV and JSON have the numbers in ``gpu_hours`` and
``core_hours``, the one that does not apply empty (null).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from segctl.cli.common import UserError, user_errors

if TYPE_CHECKING:  # the query module loads the recipe package: only when a report is made
    from segctl.tracking_query import ReportRow

#: The Markdown columns (key, title); ``overrides`` and ``curve`` (the published training curve
#: the run was compared with, and whether it fell behind it) are shown only in a table where
#: some run has them. The dataset heads each table.
COLUMNS = (
    ("run_id", "Run"),
    ("overrides", "Overrides"),
    ("kind", "Weights"),
    ("model", "Model"),
    ("published_ss", "mIoU ss (published)"),
    ("reproduced_ss", "mIoU ss (best reproduced)"),
    ("delta_ss", "Δ ss"),
    ("published_ms_flip", "mIoU ms+flip (published)"),
    ("reproduced_ms_flip", "mIoU ms+flip (best reproduced)"),
    ("delta_ms_flip", "Δ ms+flip"),
    ("curve", "Published curve"),
    ("schedule", "Iterations done/planned"),
    ("compute", "Compute"),
    ("link", "MLflow run"),
)
#: How many characters of a run's overrides a Markdown cell shows.
OVERRIDES_CHARS = 80


def _hours(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"


def _compute(row: ReportRow) -> str | None:
    if row.gpu_hours is not None:
        return f"{_hours(row.gpu_hours)} GPU×h"
    if row.core_hours is not None:
        return f"{_hours(row.core_hours)} core×h"
    return None


def _curve(row: ReportRow) -> str | None:
    """``final 43.00, fell behind`` / ``final 43.00, kept up``: the published training curve
    the run was compared with, and how the run did against it."""
    if row.curve_miou is None and row.fell_behind is None:
        return None
    final = "final ?" if row.curve_miou is None else f"final {row.curve_miou:.2f}"
    return final + (", fell behind" if row.fell_behind else ", kept up")


def _cell(row: ReportRow, key: str) -> str:
    value: Any = (row.schedule if key == "schedule" else _compute(row) if key == "compute"
                  else _curve(row) if key == "curve"
                  else row.run_id or row.recipe if key == "run_id" else getattr(row, key))
    if value is None or value == "":
        return "–"
    if key == "overrides" and len(value) > OVERRIDES_CHARS:
        return value[:OVERRIDES_CHARS - 1] + "…"
    if key.startswith("published_") and row.reference_split != "val":
        return f"{value:.2f} ({row.reference_split} server)"
    if isinstance(value, float):
        return f"{value:+.2f}" if key.startswith("delta") else f"{value:.2f}"
    return str(value)


def render_markdown(rows: list[ReportRow]) -> str:
    """One table per dataset, shaped like the published tables, one row per run (best
    first, as :func:`segctl.tracking_query.rows_of` orders them)."""
    out = []
    for dataset in sorted({r.dataset for r in rows}):
        members = [r for r in rows if r.dataset == dataset]
        out.append(f"## {dataset}\n")
        shown = {"overrides": any(r.overrides for r in members),
                 "curve": any(_curve(r) for r in members)}  # columns only where some run has it
        columns = [(k, t) for k, t in COLUMNS if shown.get(k, True)]
        out.append("| " + " | ".join(t for _, t in columns) + " |")
        out.append("|" + "|".join("---" for _ in columns) + "|")
        for row in members:
            out.append("| " + " | ".join(_cell(row, k).replace("|", "\\|") for k, _ in columns)
                       + " |")
        out.append("")
    return "\n".join(out)


def render_csv(rows: list[ReportRow]) -> str:
    buffer = io.StringIO()
    from dataclasses import fields as dataclass_fields

    from segctl.tracking_query import ReportRow

    fields = [f.name for f in dataclass_fields(ReportRow)]
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
    """Published against reproduced mIoU per run (a recipe and each of its --set variants,
    with their overrides), best first, grouped by dataset.

    Single scale and multi-scale + flip, the difference, the schedule trained, the compute
    used (GPU×hours, or CPU core×hours for runs without GPUs) and a link to the MLflow run,
    from the runs segctl logged to MLflow (through an index kept in
    $SEGCTL_HOME/report-index.db: only new and changed runs are read from MLflow).
    """
    from segctl.paths import default_tracking_uri
    from segctl.recipe.secrets import redact_url_credentials
    from segctl.io.tracking_store import ensure_store as ensure_tracking_store
    from segctl.tracking_query import collect

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
