"""Secrets in storage options: kept out of every file segctl writes, delivered to the job
through its environment.

A recipe's ``storage_options`` (``data.storage_options``, and any other ``storage_options``
mapping a recipe gains) go to fsspec and may hold credentials. An option is *secret* when its
name contains ``key``, ``secret``, ``token``, ``password``, ``passwd``, ``credential``,
``auth``, ``signature``, ``sas`` or ``connection_string`` (``key``, ``secret``, ``token`` of
s3fs; ``account_key``, ``sas_token``, ``connection_string`` of adlfs; ``password`` of
sftp/ftp ...). The run directory lives on shared storage, so a secret's value never goes there.

The recommended ways, in order:

1. No secret in the recipe at all: credentials from where the backend looks (for s3fs the
   environment's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or an AWS profile via
   ``profile``/``AWS_PROFILE``; application-default credentials for gcsfs).
2. A reference to an environment variable: ``secret: ${MY_S3_SECRET}`` (the whole value).
   ``recipe.json`` keeps the reference; the job replaces it with the variable's value from its
   own environment (:func:`resolve_secrets`). Local jobs inherit the submitting shell's
   environment, Slurm jobs too (``sbatch`` exports it unless a site profile says
   ``export: NONE``; then set the variable in the profile's ``setup`` lines).
3. A literal secret (``secret: s3cr3t``) still works, with a warning at submission:
   :func:`externalize_secrets` replaces it in the recipe segctl writes by a reference to a
   variable named ``SEGCTL_SECRET_<run hash>_<SECTION>_<OPTION>`` and segctl sets that variable
   in the environment of the submission only (the local job's process, or ``sbatch``, whose
   environment Slurm keeps with the job and its requeues, readable by the owner and the
   administrators, never in the run directory or the sbatch script). A later job of the run
   (``segctl eval RUN``, which reads the stored recipe) needs that variable exported again;
   submitting with the recipe file instead (``segctl eval RECIPE``) sets it again.

Never in ``recipe.json``, the sbatch script, submitit's pickles, ``--dry-run`` output,
``segctl recipes show``, MLflow params or artifacts (which show ``***``), or the logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from segctl.recipe.schema import Recipe

#: Option names (case-insensitive substrings) whose values are treated as secrets.
SECRET_OPTION = re.compile(
    r"key|secret|token|passw(or)?d|credential|auth|signature|sas|connection_string", re.I
)
#: What a storage-options mapping is called wherever it appears in a recipe.
OPTIONS_FIELD = "storage_options"
#: The prefix of the variables that carry literal secrets to a job.
ENV_PREFIX = "SEGCTL_SECRET_"
REDACTED = "***"
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class MissingSecretError(RuntimeError):
    """A storage option refers to an environment variable the job's environment lacks."""


def is_secret_option(name: str) -> bool:
    """Whether a storage option called ``name`` may hold a secret."""
    return bool(SECRET_OPTION.search(name))


def reference_name(value: str) -> str | None:
    """``NAME`` for a value ``${NAME}``; None for anything else."""
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def storage_options(recipe: Recipe) -> dict[str, dict[str, str]]:
    """Every ``storage_options`` mapping of ``recipe`` by dotted path (``data.storage_options``)."""
    found: dict[str, dict[str, str]] = {}

    def walk(data: Any, prefix: str) -> None:
        if not isinstance(data, Mapping):
            return
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == OPTIONS_FIELD and isinstance(value, Mapping):
                found[path] = dict(value)
            else:
                walk(value, path)

    walk(recipe.model_dump(mode="json"), "")
    return found


def literal_secrets(recipe: Recipe) -> list[str]:
    """Dotted paths of secret options that hold a literal value (not a ``${NAME}`` reference)."""
    return [
        f"{path}.{name}"
        for path, options in storage_options(recipe).items()
        for name, value in options.items()
        if is_secret_option(name) and value and reference_name(value) is None
    ]


def references(recipe: Recipe) -> dict[str, str]:
    """``{dotted option path: variable name}`` of every ``${NAME}`` storage option."""
    return {
        f"{path}.{name}": var
        for path, options in storage_options(recipe).items()
        for name, value in options.items()
        if (var := reference_name(value)) is not None
    }


def _replace_options(recipe: Recipe, replace) -> Recipe:
    """A copy of ``recipe`` whose storage options are ``replace(path, options)``."""
    data = recipe.model_dump(mode="json")
    for path in storage_options(recipe):
        *parents, last = path.split(".")
        target = data
        for part in parents:
            target = target[part]
        target[last] = replace(path, dict(target[last]))
    return type(recipe).model_validate(data)


def secret_variable(run_id: str, option_path: str) -> str:
    """The variable carrying a literal secret of run ``run_id`` (``<name>-<hash8>``):
    ``SEGCTL_SECRET_<HASH8>_<SECTION>_<OPTION>``, e.g. ``SEGCTL_SECRET_1A2B3C4D_DATA_SECRET``."""
    tag = run_id.rsplit("-", 1)[-1]
    parts = [p for p in option_path.split(".") if p != OPTIONS_FIELD]
    name = "_".join([tag, *parts]).upper()
    return ENV_PREFIX + re.sub(r"[^A-Z0-9_]", "_", name)


def externalize_secrets(recipe: Recipe, run_id: str) -> tuple[Recipe, dict[str, str]]:
    """Move literal secrets out of ``recipe``.

    Returns:
        The recipe to write (each literal secret replaced by ``${SEGCTL_SECRET_...}``, see
        :func:`secret_variable`) and ``{variable: value}`` for the job's environment. A recipe
        without literal secrets comes back unchanged with an empty mapping.
    """
    moved: dict[str, str] = {}

    def replace(path: str, options: dict[str, str]) -> dict[str, str]:
        for name, value in options.items():
            if is_secret_option(name) and value and reference_name(value) is None:
                var = secret_variable(run_id, f"{path}.{name}")
                moved[var] = value
                options[name] = "${" + var + "}"
        return options

    if not literal_secrets(recipe):
        return recipe, {}
    return _replace_options(recipe, replace), moved


def resolve_secrets(recipe: Recipe, environ: Mapping[str, str] | None = None) -> Recipe:
    """In the job: replace every ``${NAME}`` storage option by the variable's value.

    The result is for this process only; it is never written anywhere.

    Raises:
        MissingSecretError: a referenced variable is not set (the message names the option and
            the variable, never a value).
    """
    environ = os.environ if environ is None else environ
    refs = references(recipe)
    missing = {path: var for path, var in refs.items() if var not in environ}
    if missing:
        listed = ", ".join(f"{path} (${var})" for path, var in sorted(missing.items()))
        raise MissingSecretError(
            f"storage options refer to environment variables this job lacks: {listed}; export "
            "them before submitting (jobs inherit the submitting environment), set them in the "
            "site profile's setup lines, or use an AWS profile instead"
        )
    if not refs:
        return recipe

    def replace(path: str, options: dict[str, str]) -> dict[str, str]:
        for name, value in options.items():
            var = reference_name(value)
            if var is not None:
                options[name] = environ[var]
        return options

    return _replace_options(recipe, replace)


def redact_secrets(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a dumped recipe (nested dicts) with literal secret option values as ``***``
    (``${NAME}`` references stay: they name a variable, not its value)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == OPTIONS_FIELD and isinstance(value, Mapping):
            out[key] = {
                name: REDACTED if is_secret_option(name) and reference_name(v) is None and v
                else v
                for name, v in value.items()
            }
        elif isinstance(value, Mapping):
            out[key] = redact_secrets(value)
        else:
            out[key] = value
    return out
