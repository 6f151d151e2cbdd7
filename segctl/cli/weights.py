"""``segctl weights``: fetch pretrained weights into the shared cache, list what it holds.

Jobs never download weights (compute nodes often have no internet): they read the cache
(:mod:`segctl.weights`) that these commands, ``segctl submit`` and ``segctl eval`` fill.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import UserError, print_table, user_errors
from segctl.cli.placement import Profile, load_profile_or_fail
from segctl.cli.stage import parse_storage_options

app = typer.Typer(
    help="Pretrained weights: a shared cache that jobs read without internet.",
    no_args_is_help=True,
)


@app.command("fetch")
@user_errors
def fetch(
    sources: Annotated[
        list[str],
        typer.Argument(help="Recipe files (their model.init_checkpoint, reference.checkpoint "
                       "and reference.log, the published training log) or weights URLs "
                       "(https://, s3://, any fsspec URL)."),
    ],
    profile: Profile = None,
    storage_option: Annotated[
        list[str] | None,
        typer.Option("--storage-option", help="fsspec storage option KEY=VALUE (repeatable), "
                     "e.g. endpoint_url=http://host:9000."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line.")] = False,
) -> None:
    """Download weights into the cache, verified and resumable; check that they load.

    For a recipe, each file is loaded into the recipe's model the way the job will load it. A
    cached URL is not downloaded again. The cache is the site profile's cache.weights_dir, else
    $SEGCTL_HOME/weights; run this on a node with internet.
    """
    from segctl.io.weights_cache import WeightsError
    from segctl.weights import fetch as fetch_url, human_size, weights_dir

    cache = weights_dir(load_profile_or_fail(profile))
    options = parse_storage_options(storage_option)
    for source in sources:
        try:
            if source.endswith((".yaml", ".yml")):
                for line in _fetch_recipe(Path(source), cache, options, quiet):
                    typer.echo(f"{source}: {line}")
            elif "://" in source and not source.startswith("file://"):
                result = fetch_url(source, cache, storage_options=options, progress=not quiet)
                entry = result.entry
                how = "downloaded" if result.downloaded else "already cached"
                typer.echo(f"{entry.file_name}: {human_size(entry.size)}, sha256 {entry.sha256}, "
                           f"{how}: {entry.path}")
            else:
                raise UserError(
                    f"{source}: neither a recipe file (.yaml) nor a weights URL (https://, s3://, "
                    "...); local weights files are read in place and need no fetch"
                )
        except WeightsError as exc:
            raise UserError(str(exc)) from None
    typer.echo(f"cache: {cache}")


def _fetch_recipe(path: Path, cache: Path, options: dict[str, str], quiet: bool) -> list[str]:
    """Fetch and check the weights ``path``'s recipe names; one line per file."""
    from segctl.recipe import load_recipe
    from segctl.weights import fetch_and_check, recipe_weights

    from segctl.io.weights_cache import WeightsError
    from segctl.reproduction import fetch_published_log

    recipe = load_recipe(path).recipe
    files = recipe_weights(recipe, published=True)
    lines = (fetch_and_check(files, recipe, cache, check_local=True, progress=not quiet,
                             storage_options=options) if files else
             ["names no weights (model.init_checkpoint, reference.checkpoint): nothing to fetch"])
    try:  # the published log serves a comparison: one that cannot be fetched is said, not fatal
        log_line = fetch_published_log(recipe, cache, storage_options=options,
                                       progress=not quiet)
    except WeightsError as exc:
        log_line = (f"reference.log not fetched ({exc}): runs of this recipe train without the "
                    "comparison with the published curve")
    return lines + ([log_line] if log_line else [])


@app.command("list")
@user_errors
def list_weights(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    profile: Profile = None,
) -> None:
    """The cached weights: file name, size, SHA-256, source URL and where the file is.

    Credentials inside a source URL (``https://user:pw@host/...``) are shown as ``user:***``.
    """
    from segctl.recipe.secrets import redact_url_credentials
    from segctl.io.weights_cache import list_cached
    from segctl.weights import human_size, weights_dir

    cache = weights_dir(load_profile_or_fail(profile))
    entries = list_cached(cache)
    if as_json:
        rows = [{**entry.to_dict(), "url": redact_url_credentials(entry.url)} for entry in entries]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not entries:
        typer.echo(f"no weights cached in {cache}")
        return
    print_table(
        ["FILE", "SIZE", "SHA256", "URL", "PATH"],
        [(e.file_name, human_size(e.size), e.sha256, redact_url_credentials(e.url),
          e.path if e.present else f"{e.path} (missing: fetch again)") for e in entries],
    )
