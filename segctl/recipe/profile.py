"""Site profiles: the Slurm settings of one cluster (``slurm/profiles/<site>.yaml``).

A profile holds what belongs to a site rather than to a recipe: partition, account, QOS,
constraint, shell lines run before the task (module loads, environment activation), extra
``#SBATCH`` directives, the default time limit, and where the site's shared caches live
(``cache.weights_dir``, the pretrained-weights cache of :mod:`segctl.weights`). Select one with
``--profile NAME`` or ``SEGCTL_PROFILE``.

Every string that reaches the sbatch script is validated here: Slurm words are restricted to a
safe alphabet, and no value may hold a newline or another control character (a newline inside
a ``#SBATCH`` line would start a new shell line).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from segctl.recipe.fields import (
    Section,
    check_no_control,
    check_slurm_word,
)

_DIRECTIVE = re.compile(r"^[a-z][a-z0-9-]*$")

#: Directives segctl sets itself from the recipe; a profile may not override them.
RESERVED_DIRECTIVES = frozenset(
    {"job-name", "nodes", "ntasks-per-node", "cpus-per-task", "gpus-per-node", "time", "output",
     "error", "signal", "array", "open-mode", "wckey"}
)


class CacheSettings(Section):
    """Shared caches of a site."""

    weights_dir: str | None = Field(
        None,
        description="Folder of the pretrained-weights cache (`segctl weights fetch`), on "
        "storage the compute nodes share; default $SEGCTL_HOME/weights. `~` and $VARS are "
        "expanded where segctl runs.",
    )

    @field_validator("weights_dir")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return None if value is None else check_no_control(value, "cache.weights_dir")


class SiteProfile(Section):
    """Slurm settings of one site, and where its shared caches live."""

    description: str = ""
    partition: str | None = Field(None, description="Default partition.")
    account: str | None = Field(None, description="Account to charge (--account).")
    qos: str | None = Field(None, description="Quality of service (--qos).")
    constraint: str | None = Field(None, description="Node features (--constraint).")
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run in the batch script before the tasks start.",
    )
    sbatch: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="Extra #SBATCH directives, e.g. {exclusive: true, mail-type: END}.",
    )
    time_min: int | None = Field(None, gt=0, description="Default time limit in minutes.")
    cache: CacheSettings = Field(
        default_factory=CacheSettings, description="Shared caches (pretrained weights)."
    )

    @field_validator("partition", "account", "qos", "constraint")
    @classmethod
    def _words(cls, value: str | None, info) -> str | None:
        return check_slurm_word(value, info.field_name)

    @field_validator("setup")
    @classmethod
    def _lines(cls, value: list[str]) -> list[str]:
        return [check_no_control(line, "setup line") for line in value]

    @field_validator("sbatch")
    @classmethod
    def _directives(cls, value: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for key, item in value.items():
            if not _DIRECTIVE.match(key):
                raise ValueError(f"sbatch directive {key!r}: use the long name, e.g. mail-type")
            if key in RESERVED_DIRECTIVES:
                raise ValueError(f"sbatch directive {key!r} is set by segctl from the recipe")
            if isinstance(item, str):
                check_no_control(item, f"sbatch.{key}")
        return value
