"""``segctl recipes``: list, validate, show and export the schema of recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import UserError, print_table, user_errors

app = typer.Typer(help="List, validate and inspect recipes.", no_args_is_help=True)

Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override a field: section.field=value.")
]


def recipe_files(paths: list[Path]) -> list[Path]:
    """YAML files named by ``paths``: files as given, folders searched recursively, sorted;
    a file reached twice (e.g. through an alias symlink) is listed once.

    Raises:
        UserError: a path does not exist.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


@app.command("list")
@user_errors
def list_recipes(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List recipes with their dataset, model, crop, schedule and reference mIoU."""
    from segctl.recipe import MODEL_PRESETS, RecipeError, load_recipe, run_id

    entries, broken = [], []
    for path in recipe_files(paths or [Path("recipes")]):
        try:
            recipe = load_recipe(path).recipe
        except RecipeError as exc:
            broken.append(exc)
            continue
        model = MODEL_PRESETS[recipe.model.name]
        ref = recipe.reference
        entries.append(
            {
                "path": str(path),
                "name": recipe.name,
                "run_id": run_id(recipe),
                "dataset": recipe.data.dataset,
                "method": model.method,
                "backbone": model.backbone,
                "crop_size": list(recipe.data.crop_size),
                "max_iters": recipe.schedule.max_iters,
                "max_epochs": recipe.schedule.max_epochs,
                "batch_size": recipe.train.batch_size,
                "gpus": recipe.cluster.nodes * recipe.cluster.gpus_per_node,
                "miou_ss": ref.miou_ss if ref else None,
                "miou_ms_flip": ref.miou_ms_flip if ref else None,
            }
        )
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
    else:
        rows = [
            (
                e["dataset"], e["method"], e["backbone"], "x".join(map(str, e["crop_size"])),
                f"{e['max_iters']} it" if e["max_iters"] else f"{e['max_epochs']} ep",
                e["miou_ss"] or "-", e["miou_ms_flip"] or "-", e["path"],
            )
            for e in sorted(entries, key=lambda e: (e["dataset"], e["path"]))
        ]
        print_table(("DATASET", "METHOD", "BACKBONE", "CROP", "SCHEDULE", "mIoU", "mIoU(ms+flip)", "RECIPE"), rows)
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
    """Print the resolved recipe (presets filled, overrides applied) and its run id, as JSON."""
    from segctl.recipe import load_recipe, run_id

    loaded = load_recipe(recipe, overrides or [])
    typer.echo(f"# run id: {run_id(loaded.recipe)}")
    typer.echo(loaded.recipe.model_dump_json(indent=2))


@app.command("schema")
def schema() -> None:
    """Print the recipe JSON Schema (for editor validation)."""
    from segctl.recipe import Recipe

    typer.echo(json.dumps(Recipe.model_json_schema(), indent=2))
