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

Credentials inside a URL, in any field of a recipe (``model.init_checkpoint:
https://user:pw@host/w.pth``, ``tracking.uri: http://user:pw@mlflow:5000``, ``data.root:
s3://key:secret@bucket/x``, a storage option such as ``endpoint_url``), are secrets too, under
one rule (:func:`redact_url_credentials`): the password (or, for a lone ``token@``, the user
part) is the secret. It is shown as ``***`` (``https://user:***@host/w.pth``), and it travels
like a literal storage-option secret: ``recipe.json`` holds
``https://user:${SEGCTL_SECRET_<HASH8>_MODEL_INIT_CHECKPOINT}@host/w.pth`` and the job gets the
variable in its environment; ``https://user:${MY_PASSWORD}@host/...`` names your own variable.
The data plane (MLflow params and the recipe artifact, ``progress.json`` reasons, the tracker's
log lines) uses the same rule.

Never in ``recipe.json``, the sbatch script, submitit's pickles, ``--dry-run`` output,
``segctl recipes show``, MLflow params or artifacts (which show ``***``), or the logs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
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
#: Credentials in a URL: ``scheme://user:password@`` or ``scheme://token@`` (RFC 3986 userinfo:
#: no ``/ ? # @`` or white space inside), anywhere in a text.
URL_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/?#@:]*)"
    r"(?::(?P<password>[^\s/?#@]*))?@"
)


class MissingSecretError(RuntimeError):
    """A storage option refers to an environment variable the job's environment lacks."""


def _secret_part(match: re.Match) -> tuple[str, int, int] | None:
    """``(secret, start, end)`` of a :data:`URL_CREDENTIALS` match: the password, or the user
    part of a ``token@`` form; None when there is nothing secret (an empty part)."""
    if match.group("password") is not None:
        if not match.group("password"):
            return None
        return match.group("password"), match.start("password"), match.end("password")
    if not match.group("user"):
        return None
    return match.group("user"), match.start("user"), match.end("user")


def redact_url_credentials(text: str) -> str:
    """``text`` with the secret of every URL's credentials as ``***``:
    ``https://user:pw@host/x`` -> ``https://user:***@host/x``, ``https://tok@host`` ->
    ``https://***@host``, in plain values and in free text (log lines, error messages) alike.
    ``${NAME}`` references stay (they name a variable, not its value)."""
    if "@" not in text:
        return text

    def hide(match: re.Match) -> str:
        part = _secret_part(match)
        if part is None or reference_name(part[0]) is not None:
            return match.group(0)
        start, end = part[1] - match.start(), part[2] - match.start()
        return match.group(0)[:start] + REDACTED + match.group(0)[end:]

    return URL_CREDENTIALS.sub(hide, text)


class RedactingFilter(logging.Filter):
    """A logging filter that hides the secrets of URL credentials (:func:`redact_url_credentials`)
    in every record a handler writes: its message, and the traceback of an exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_url_credentials(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_url_credentials(record.exc_text)
        return True


def redact_logs(*logger_names: str) -> None:
    """Put a :class:`RedactingFilter` on every handler of the named loggers (``""``: the root
    logger), once: what a job's log lines say of a URL, its credentials never say."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def url_secrets(text: str) -> list[str]:
    """The literal secrets of the URL credentials in ``text`` (references left out)."""
    found = []
    for match in URL_CREDENTIALS.finditer(text):
        part = _secret_part(match)
        if part is not None and reference_name(part[0]) is None:
            found.append(part[0])
    return found


def _url_references(text: str) -> list[str]:
    """Variable names of ``${NAME}`` references in the URL credentials of ``text``."""
    names = []
    for match in URL_CREDENTIALS.finditer(text):
        part = _secret_part(match)
        if part is not None and (name := reference_name(part[0])) is not None:
            names.append(name)
    return names


def _replace_url_secrets(text: str, replace: Callable[[str], str]) -> str:
    """``text`` with the secret of every URL's credentials replaced by ``replace(secret)``."""

    def swap(match: re.Match) -> str:
        part = _secret_part(match)
        if part is None:
            return match.group(0)
        start, end = part[1] - match.start(), part[2] - match.start()
        return match.group(0)[:start] + replace(part[0]) + match.group(0)[end:]

    return URL_CREDENTIALS.sub(swap, text)


def _leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted path, value)`` of every string in nested dicts and lists."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _leaves(value, f"{prefix}.{index}")
    elif isinstance(data, str):
        yield prefix, data


def _map_leaves(data: Any, fn: Callable[[str, str], str], prefix: str = "") -> Any:
    """A copy of nested dicts and lists with every string ``s`` at ``path`` as ``fn(path, s)``."""
    if isinstance(data, Mapping):
        return {key: _map_leaves(value, fn, f"{prefix}.{key}" if prefix else str(key))
                for key, value in data.items()}
    if isinstance(data, list):
        return [_map_leaves(value, fn, f"{prefix}.{i}") for i, value in enumerate(data)]
    if isinstance(data, str):
        return fn(prefix, data)
    return data


def _option_name(path: str) -> str | None:
    """The option's name when ``path`` is a direct entry of a storage-options mapping."""
    *parents, name = path.split(".")
    return name if parents and parents[-1] == OPTIONS_FIELD else None


def _literal_option_secret(path: str, value: str) -> bool:
    name = _option_name(path)
    return (name is not None and is_secret_option(name) and bool(value)
            and reference_name(value) is None)


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
    """Dotted paths of values holding a literal secret: secret options that are not a
    ``${NAME}`` reference, and values with credentials inside a URL
    (:func:`redact_url_credentials`)."""
    return [
        path for path, value in _leaves(recipe.model_dump(mode="json"))
        if _literal_option_secret(path, value) or url_secrets(value)
    ]


def references(recipe: Recipe) -> dict[str, str]:
    """``{dotted path: variable name}`` of every ``${NAME}`` storage option and every
    ``${NAME}`` in the credentials of a URL."""
    found = {}
    for path, value in _leaves(recipe.model_dump(mode="json")):
        if _option_name(path) is not None and (var := reference_name(value)) is not None:
            found[path] = var
        for var in _url_references(value):
            found[path] = var
    return found


def _map_recipe(recipe: Recipe, fn: Callable[[str, str], str]) -> Recipe:
    """A copy of ``recipe`` with every string value ``s`` at dotted ``path`` as
    ``fn(path, s)``."""
    return type(recipe).model_validate(_map_leaves(recipe.model_dump(mode="json"), fn))


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

    def move(path: str, value: str) -> str:
        var = secret_variable(run_id, path)
        moved[var] = value
        return "${" + var + "}"

    def replace(path: str, value: str) -> str:
        if _literal_option_secret(path, value):
            return move(path, value)
        if url_secrets(value):
            return _replace_url_secrets(
                value, lambda secret: secret if reference_name(secret) else move(path, secret)
            )
        return value

    if not literal_secrets(recipe):
        return recipe, {}
    return _map_recipe(recipe, replace), moved


def resolve_secrets(recipe: Recipe, environ: Mapping[str, str] | None = None) -> Recipe:
    """In the job: replace every ``${NAME}`` storage option, and every ``${NAME}`` in the
    credentials of a URL, by the variable's value.

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

    def replace(path: str, value: str) -> str:
        var = reference_name(value)
        if _option_name(path) is not None and var is not None:
            return environ[var]
        if _url_references(value):
            return _replace_url_secrets(
                value, lambda part: environ[name] if (name := reference_name(part)) else part
            )
        return value

    return _map_recipe(recipe, replace)


def fill_url_references(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every ``${NAME}`` in the credentials of its URLs replaced by the variable's
    value (from ``environ``, default this process's environment): one value the way
    :func:`resolve_secrets` fills a whole recipe.

    Raises:
        MissingSecretError: a referenced variable is not set (the message names it).
    """
    environ = os.environ if environ is None else environ
    missing = [name for name in _url_references(text) if name not in environ]
    if missing:
        raise MissingSecretError(
            f"{redact_url_credentials(text)} refers to ${', $'.join(missing)}, which is not set "
            "here: export it (submitting with the recipe file sets segctl's own ones again)"
        )
    return _replace_url_secrets(
        text, lambda part: environ[name] if (name := reference_name(part)) else part
    )


def redact_secrets(data: Mapping[str, Any], *, every_option: bool = False) -> dict[str, Any]:
    """A copy of a dumped recipe (nested dicts and lists) with literal secret option values as
    ``***`` and the secrets of URL credentials hidden (:func:`redact_url_credentials`) in every
    string; ``${NAME}`` references stay (they name a variable, not its value).

    ``every_option`` hides every value inside any storage-options mapping, secret-named or not
    (endpoints and profiles are site details: what MLflow gets). A ``storage_options`` entry
    that is not a mapping (no option names to tell secrets by) is hidden whole.

    This is segctl's one rule of what is shown of a recipe: ``segctl recipes show`` and the
    MLflow params and recipe artifact (:func:`trainer.tracking.flatten_params`, with
    ``every_option``) go through it; single values shown on their own (the data root and
    tracking URI of ``--dry-run``, the reasons of ``segctl status``, the sbatch script, log
    lines) through :func:`redact_url_credentials`, its rule for one string."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == OPTIONS_FIELD and not isinstance(value, Mapping):
            out[key] = REDACTED
        elif key == OPTIONS_FIELD:
            if every_option:
                out[key] = _map_all(value, lambda v: REDACTED)
            else:
                out[key] = {
                    name: REDACTED if is_secret_option(name) and reference_name(v) is None and v
                    else _map_all(v, _redact_value)
                    for name, v in value.items()
                }
        elif isinstance(value, Mapping):
            out[key] = redact_secrets(value, every_option=every_option)
        else:
            out[key] = _map_all(value, _redact_value)
    return out


def _redact_value(value: Any) -> Any:
    return redact_url_credentials(value) if isinstance(value, str) else value


def _map_all(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to every leaf of nested dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _map_all(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_all(v, fn) for v in value]
    return fn(value)
