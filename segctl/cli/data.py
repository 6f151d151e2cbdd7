"""``segctl data``: datasets on disk (synthesize, prepare from the public releases, inspect)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from segctl.cli.common import UserError, user_errors

app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True)

#: Exit status of ``inspect`` when the dataset has problems (the command itself worked).
EXIT_PROBLEMS = 1


@app.command("synthesize")
@user_errors
def synthesize(
    root: Annotated[Path, typer.Argument(help="Folder to write (Cityscapes layout).")],
    train: Annotated[int, typer.Option(help="Training frames.")] = 48,
    val: Annotated[int, typer.Option(help="Validation frames.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a small procedural street-scene dataset in the Cityscapes layout (no download).

    Deterministic for a seed; a complete dataset with the same settings is left as it is.
    """
    from trainer.data.synthetic import make_synthetic_cityscapes

    out = make_synthetic_cityscapes(root, n_train=train, n_val=val, seed=seed)
    typer.echo(f"synthetic Cityscapes-layout dataset ready at {out} ({train} train, {val} val)")


@app.command("prepare")
@user_errors
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset preset name, e.g. cityscapes, pascal_voc.")],
    src: Annotated[Path, typer.Argument(help="The downloaded release (folder; see the docs of each converter).")],
    dst: Annotated[Path, typer.Argument(help="Output root, in the layout the trainer reads.")],
    workers: Annotated[int, typer.Option(min=1, help="Parallel processes.")] = 1,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    sbd: Annotated[Optional[Path], typer.Option(help="pascal_voc: SBD benchmark_RELEASE folder (adds trainaug).")] = None,
    context_mats: Annotated[Optional[Path], typer.Option(help="pascal_context: folder of per-image .mat files (default SRC/trainval).")] = None,
    context_json: Annotated[Optional[Path], typer.Option(help="pascal_context: Detail API trainval_merged.json instead of .mat files (found in SRC without this option when SRC has no trainval/).")] = None,
    label_format: Annotated[str, typer.Option(help="coco_stuff164k: stuffthingmaps (0-based, 255 unlabeled) or stuff-pixelmaps (92..182).")] = "stuffthingmaps",
    stride: Annotated[int, typer.Option(help="potsdam/vaihingen: patch step in pixels (512 gives mmseg's files).")] = 256,
    unknown_colours: Annotated[str, typer.Option(help="potsdam/vaihingen: error, or ignore (id 0, as mmseg).")] = "error",
) -> None:
    """Convert a public release into the layout the trainer reads.

    Resumable (finished files are skipped; nothing is ever half-written under its final name)
    and parallel over files. Bad input stops with every failing file named, exit status 2.
    """
    from trainer.data.convert import CONVERTERS, ConversionError

    if dataset not in CONVERTERS:
        raise UserError(f"no converter for {dataset!r}; known: {', '.join(sorted(CONVERTERS))}")
    if not src.is_dir():
        raise UserError(f"source folder not found: {src}")
    options: dict = {}
    if dataset == "pascal_voc" and sbd is not None:
        options["sbd"] = sbd
    if dataset.startswith("pascal_context") and context_mats is not None:
        options["context_mats"] = context_mats
    if dataset.startswith("pascal_context") and context_json is not None:
        options["context_json"] = context_json
    if dataset == "coco_stuff164k":
        options["label_format"] = label_format
    if dataset in ("potsdam", "vaihingen"):
        options.update(stride=stride, unknown_colours=unknown_colours)
    try:
        counts = CONVERTERS[dataset](src, dst, workers=workers, progress=progress, **options)
    except ConversionError as exc:
        raise UserError(str(exc)) from None
    summary = ", ".join(f"{n} {split}" for split, n in counts.items())
    typer.echo(f"{dataset} ready at {dst} ({summary})")


def _preset(dataset: str):
    from segctl.recipe.datasets import DATASET_PRESETS

    if dataset not in DATASET_PRESETS:
        raise UserError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASET_PRESETS))}")
    return DATASET_PRESETS[dataset]


@app.command("inspect")
@user_errors
def inspect(
    dataset: Annotated[str, typer.Argument(help="Dataset preset name (gives layout, classes, splits).")],
    root: Annotated[Path, typer.Argument(help="Prepared dataset root.")],
    split: Annotated[Optional[list[str]], typer.Option(help="Split to inspect (repeatable); default: the preset's train and val splits.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many pairs per split.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel decoding processes.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    contact_sheet: Annotated[Optional[Path], typer.Option(help="Also write a PNG of captioned images with their labels blended over them and a legend of the classes.")] = None,
) -> None:
    """Counts per split, image sizes, pixels per class, and problems (exit 1 if any)."""
    from trainer.data.inspect import contact_sheet as write_sheet
    from trainer.data.inspect import inspect_dataset

    preset = _preset(dataset)
    if not root.is_dir():
        raise UserError(f"dataset root not found: {root}")
    splits = split or [preset.train_split, preset.val_split]
    report = inspect_dataset(
        preset.layout, root, splits, preset.num_classes, preset.ignore_index,
        preset.reduce_zero_label, limit=limit, workers=workers,
    )
    if contact_sheet is not None:
        sheet = write_sheet(
            preset.layout, root, splits, preset.palette, contact_sheet, classes=preset.classes,
            reduce_zero_label=preset.reduce_zero_label, ignore_index=preset.ignore_index,
        )
        if not as_json:
            typer.echo(f"contact sheet: {contact_sheet} ({len(sheet.cells)} pairs)")
    if as_json:
        data = report.to_dict()
        data["classes"] = list(preset.classes)
        typer.echo(json.dumps(data, indent=2))
    else:
        _print_report(report, preset.classes)
    if report.problems:
        raise typer.Exit(EXIT_PROBLEMS)


def _print_report(report, classes) -> None:
    for s in report.splits:
        size = (
            f"{s.min_size[0]}x{s.min_size[1]} .. {s.max_size[0]}x{s.max_size[1]} px"
            if s.min_size else "-"
        )
        typer.echo(f"{s.split}: {s.pairs} pairs ({s.inspected} inspected), images {size}")
        total = sum(s.class_pixels) + s.ignore_pixels + sum(s.other_pixels.values())
        for name, n in zip(classes, s.class_pixels):
            if n:
                typer.echo(f"  {name:<24} {n:>14,d} px  {100 * n / max(total, 1):6.2f}%")
        typer.echo(f"  {'(ignore)':<24} {s.ignore_pixels:>14,d} px")
        for ident, n in sorted(s.other_pixels.items()):
            typer.echo(f"  {'(id ' + str(ident) + ', not a class)':<24} {n:>14,d} px")
    problems = report.problems
    typer.echo(f"{len(problems)} problem(s)" + (":" if problems else ""))
    for p in problems[:50]:
        typer.echo(f"  {p}")
    if len(problems) > 50:
        typer.echo(f"  ... and {len(problems) - 50} more (use --json for all)")
