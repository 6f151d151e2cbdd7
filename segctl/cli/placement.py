"""Options shared by ``submit`` and ``eval``: where a job runs and with what resources.

Each option becomes a typed override of the recipe's ``cluster`` section (so it is validated
by the schema and, like the whole section, leaves the run id unchanged), and ``--profile``
selects a site profile.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

Nodes = Annotated[int | None, typer.Option("--nodes", help="Nodes (cluster.nodes).")]
GpusPerNode = Annotated[
    int | None, typer.Option("--gpus-per-node", help="GPUs per node, one task each (0: CPU only).")
]
Partition = Annotated[str | None, typer.Option("--partition", help="Slurm partition.")]
TimeLimit = Annotated[int | None, typer.Option("--time", help="Time limit in minutes.")]
Profile = Annotated[
    str | None, typer.Option("--profile", help="Site profile (default: $SEGCTL_PROFILE).")
]
Cluster = Annotated[
    str | None,
    typer.Option("--cluster", help="slurm or local (default: the recipe's; auto-detected)."),
]


def placement_overrides(
    nodes: int | None,
    gpus_per_node: int | None,
    partition: str | None,
    time_min: int | None,
    cluster: str | None,
) -> list[str]:
    """``--set``-style overrides of the cluster section for the options that were given."""
    values = {
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "partition": partition,
        "timeout_min": time_min,
        "executor": cluster,
    }
    return [f"cluster.{key}={json.dumps(value)}" for key, value in values.items() if value is not None]


def load_profile_or_fail(name: str | None):
    """The selected site profile (or None); a missing one is a user error."""
    from segctl.cli.common import UserError
    from segctl.profiles import ProfileNotFound, load_profile

    try:
        return load_profile(name)
    except ProfileNotFound as exc:
        raise UserError(str(exc)) from None
