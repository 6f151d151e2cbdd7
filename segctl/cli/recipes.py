"""``segctl recipes``: list, validate, show and export the schema of recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import UserError, user_errors

app = typer.Typer(help="List, validate and inspect recipes.", no_args_is_help=True)

Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override a field: section.field=value.")
]


def recipe_files(paths: list[Path]) -> list[Path]:
    """YAML files named by ``paths``: files as given, folders searched recursively, sorted;
    a file reached twice (e.g. through an alias symlink) is listed once. A path that exists but
    is no regular file (a FIFO, a device) is listed as given, for the loader to refuse by name.

    Raises:
        UserError: a path does not exist.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")))
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _human_count(n: int) -> str:
    """1_120_338_396 -> '1.12B', 59_077_148 -> '59.1M', 3_753_718 -> '3.75M'."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            value = n / scale
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


def _schedule_text(entry: dict) -> str:
    if entry["max_iters"]:
        iters = entry["max_iters"]
        return f"{iters // 1000}k it" if iters % 1000 == 0 else f"{iters} it"
    return f"{entry['max_epochs']} ep"


def _print_grouped(entries: list[dict]) -> None:
    """One block per dataset (preset order, as the published tables group them): a header line,
    then one row per recipe; the columns line up across blocks."""
    from segctl.recipe import DATASET_PRESETS

    order = {name: i for i, name in enumerate(DATASET_PRESETS)}
    headers = ("METHOD", "BACKBONE", "CROP", "SCHEDULE", "BATCH", "mIoU", "mIoU(ms+flip)", "PARAMS", "RECIPE")
    groups: dict[str, list[tuple[str, ...]]] = {}
    for e in sorted(
        entries,
        key=lambda e: (order.get(e["dataset"], len(order)), e["dataset"], e["method"], e["backbone"],
                       e["max_epochs"] or 0, e["max_iters"] or 0, e["path"]),
    ):
        groups.setdefault(e["dataset"], []).append(
            (
                e["method"], e["backbone"], "x".join(map(str, e["crop_size"])), _schedule_text(e),
                f"{e['gpus']}x{e['batch_size']}",
                "-" if e["miou_ss"] is None else f"{e['miou_ss']:.2f}",
                "-" if e["miou_ms_flip"] is None else f"{e['miou_ms_flip']:.2f}",
                _human_count(e["params"]), e["path"],
            )
        )
    rows = [row for block in groups.values() for row in block]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    for i, (dataset, block) in enumerate(groups.items()):
        num_classes = DATASET_PRESETS[dataset].num_classes
        if i:
            typer.echo("")
        typer.echo(f"DATASET {dataset} ({num_classes} classes, {len(block)} recipes)")
        typer.echo(line(headers))
        for row in block:
            typer.echo(line(row))


@app.command("list")
@user_errors
def list_recipes(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List recipes grouped by dataset: method, backbone, crop, schedule, reference mIoU and the
    model's parameter count."""
    from segctl.model_params import ParameterCounts
    from segctl.recipe import MODEL_PRESETS, RecipeError, load_recipe, run_id
    from segctl.recipe.resolve import dataset_preset

    params = ParameterCounts()
    entries, broken = [], []
    for path in recipe_files(paths or [Path("recipes")]):
        try:
            recipe = load_recipe(path).recipe
        except RecipeError as exc:
            broken.append(exc)
            continue
        model = MODEL_PRESETS[recipe.model.name]
        num_classes = dataset_preset(recipe).num_classes
        ref = recipe.reference
        entries.append(
            {
                "path": str(path),
                "name": recipe.name,
                "run_id": run_id(recipe),
                "dataset": recipe.data.dataset,
                "method": model.method,
                "backbone": model.backbone,
                "model": recipe.model.name,
                "num_classes": num_classes,
                "crop_size": list(recipe.data.crop_size),
                "max_iters": recipe.schedule.max_iters,
                "max_epochs": recipe.schedule.max_epochs,
                "batch_size": recipe.train.batch_size,
                "gpus": recipe.cluster.nodes * recipe.cluster.gpus_per_node,
                "miou_ss": ref.miou_ss if ref else None,
                "miou_ms_flip": ref.miou_ms_flip if ref else None,
                "params": params.get(recipe.model.name, num_classes),
            }
        )
    params.save()
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
    else:
        _print_grouped(entries)
    for exc in broken:
        typer.echo(exc.report(), err=True)
    if broken:
        raise typer.Exit(2)


@app.command("validate")
@user_errors
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Recipe files or folders (recursive).")],
) -> None:
    """Validate recipes offline; every problem of every file is reported, exit 2 if any."""
    from segctl.recipe import RecipeError, load_recipe

    files = recipe_files(paths)
    if not files:
        raise UserError(f"no .yaml recipes under {', '.join(map(str, paths))}")
    failed = 0
    for path in files:
        try:
            load_recipe(path)
        except RecipeError as exc:
            failed += 1
            typer.echo(exc.report(), err=True)
        else:
            typer.echo(f"ok  {path}")
    typer.echo(f"{len(files) - failed} valid, {failed} invalid")
    if failed:
        raise typer.Exit(2)


@app.command("show")
@user_errors
def show(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    overrides: Overrides = None,
) -> None:
    """Print the resolved recipe (presets filled, overrides applied) and its run id, as JSON
    (literal secrets in storage options shown as ***)."""
    from segctl.recipe import load_recipe, run_id
    from segctl.recipe.secrets import redact_secrets

    loaded = load_recipe(recipe, overrides or [])
    typer.echo(f"# run id: {run_id(loaded.recipe)}")
    typer.echo(json.dumps(redact_secrets(loaded.recipe.model_dump(mode="json")), indent=2))


@app.command("schema")
def schema() -> None:
    """Print the recipe JSON Schema (for editor validation)."""
    from segctl.recipe import Recipe

    typer.echo(json.dumps(Recipe.model_json_schema(), indent=2))
