"""``segctl data``: datasets on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import user_errors

app = typer.Typer(help="Prepare datasets.", no_args_is_help=True)


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
