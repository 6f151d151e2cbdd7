"""Building blocks shared by the recipe schema and the site profiles, so that neither imports
the other: the base of every section, and the checks of strings that reach an sbatch script.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated, and
    NaN or infinite numbers are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: Characters allowed in partition, account, QOS and constraint values.
SLURM_WORD = re.compile(r"^[A-Za-z0-9_.,:+|&*=@%\[\]-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_slurm_word(value: str | None, field: str) -> str | None:
    """Validate a partition/account/QOS/constraint value (None passes).

    Raises:
        ValueError: characters outside :data:`SLURM_WORD`.
    """
    if value is not None and not SLURM_WORD.match(value):
        raise ValueError(
            f"{field} may use only letters, digits and _ . , : + | & * = @ % [ ] -, got {value!r}"
        )
    return value


def check_no_control(value: str, field: str) -> str:
    """Reject newlines and other control characters.

    Raises:
        ValueError: the value holds a control character.
    """
    if _CONTROL.search(value):
        raise ValueError(f"{field} must be one line without control characters, got {value!r}")
    return value
