"""``segctl stage``: copy a dataset tree from any fsspec URL to a local directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import UserError, user_errors


def parse_storage_options(pairs: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` as a dict (values stay strings; they are never echoed back)."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            # the text may be a secret: do not echo it
            raise UserError("--storage-option wants KEY=VALUE (e.g. endpoint_url=http://host:9000)")
        options[key.strip()] = value
    return options


@user_errors
def stage(
    src: Annotated[str, typer.Argument(help="Source: s3://, gs://, https://, file:// URL or a path.")],
    dst: Annotated[Path, typer.Argument(help="Local directory to stage into.")],
    workers: Annotated[int, typer.Option("--workers", min=1, help="Files copied at once.")] = 8,
    storage_option: Annotated[
        list[str] | None,
        typer.Option("--storage-option", help="fsspec storage option KEY=VALUE (repeatable), e.g. endpoint_url=http://host:9000."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line.")] = False,
) -> None:
    """Stage a dataset: copy new and changed files only (manifest in DST/.segctl-manifest.json).

    Credentials come from the usual places (environment, AWS config and profiles, ...).
    An interrupted stage continues where it stopped when run again.
    """
    from segctl.io.copy import stage as stage_tree
    from segctl.io.source import StagingError

    try:
        result = stage_tree(
            src, dst, workers=workers, storage_options=parse_storage_options(storage_option),
            progress=not quiet,
        )
    except StagingError as exc:
        raise UserError(str(exc)) from None
    typer.echo(result.summary())
