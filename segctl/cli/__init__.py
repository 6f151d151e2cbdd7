"""The ``segctl`` command: registers one sub-app or command per noun, nothing else."""

from __future__ import annotations

import typer

from segctl.cli import data, recipes, report, stage, sync, weights
from segctl.cli.bench import bench
from segctl.cli.evaluate import evaluate
from segctl.cli.status import cancel, forget, logs, status
from segctl.cli.submit import submit

app = typer.Typer(
    name="segctl",
    help="Reproduce semantic-segmentation results: recipes, submission, status, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(recipes.app, name="recipes")
app.add_typer(data.app, name="data")
app.add_typer(weights.app, name="weights")
app.command("submit")(submit)
app.command("status")(status)
app.command("logs")(logs)
app.command("eval")(evaluate)
app.command("cancel")(cancel)
app.command("forget")(forget)
app.command("stage")(stage.stage)
app.command("sync")(sync.sync)
app.command("report")(report.report)
app.command("bench")(bench)


def main() -> None:
    """Console-script entry point."""
    app()
