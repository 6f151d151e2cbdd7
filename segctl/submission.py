"""Plan, then apply: turning a loaded recipe into a submitted job.

:func:`plan_training` and :func:`plan_evaluation` have no side effects: they resolve the run id,
the run directory, the executor and its parameters. ``--dry-run`` prints the plan. :func:`apply`
creates the run directory, writes the registry marker, submits, and records the job id.

Literal secrets in a recipe's storage options never reach the run directory: planning replaces
them by ``${SEGCTL_SECRET_...}`` references (:func:`segctl.recipe.secrets.externalize_secrets`)
and keeps their values in :attr:`SubmitPlan.job_env`, which :func:`apply` puts into the
environment of the submission only (the local job's process, or ``sbatch``).

Pretrained weights named by URL (``model.init_checkpoint``; an evaluation's checkpoint) are
listed in :attr:`SubmitPlan.weights`; :func:`apply` fetches them into the weights cache
(:mod:`segctl.weights`) and checks that they load before anything is submitted (local files
are checked without torch: readable, a PyTorch file, tensors only), and the job
gets the cache folder as its ``weights_dir`` argument (not part of the recipe, so the run id
does not depend on it) and reads only the cache. :func:`check_pretraining` refuses to train a
recipe that reproduces a published result without pretrained weights, unless asked to.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segctl import executors
from segctl.batch_plan import BatchPlan, ScaleLr
from segctl.executors import ExecutorParams
from segctl.paths import default_tracking_uri, is_url, runs_dir
from segctl.recipe import LoadedRecipe, Recipe, RecipeIssue, recipe_hash, run_id
from segctl.recipe.eval_request import EvalRequest, OutputFormat
from segctl.recipe.profile import SiteProfile
from segctl.recipe.schema import ClusterConfig
from segctl.recipe.rundir import RunDir
from segctl.registry import JobRecord, Registry, RunRecord
from segctl.runs import create_private_dir, create_run_dir
from segctl.status import TERMINAL_STATES, refresh_states
from segctl.io.weights_cache import default_weights_dir
from segctl.weights import WeightsFile, evaluation_weights, recipe_weights, weights_dir


class SubmitError(RuntimeError):
    """Submission cannot go ahead (e.g. the run already has a job running)."""


@dataclass(frozen=True)
class SubmitPlan:
    """Everything :func:`apply` will do, decided up front.

    Attributes:
        kind: ``train`` or ``eval``.
        run_id: ``<name>-<hash8>``.
        run_dir: the run directory (created by apply if missing).
        recipe: the resolved recipe with absolute local paths and a concrete tracking URI.
        source: the recipe file it came from.
        executor: ``local`` or ``slurm``.
        parameters: the executor's typed parameters (:class:`segctl.executors.LocalParams`
            or :class:`~segctl.executors.SlurmParams`).
        args: positional arguments of the job callable after ``run_dir`` (an evaluation's:
            its :class:`~segctl.recipe.eval_request.EvalRequest`).
        label: for eval jobs, the name of the result files under ``eval/``.
        notes: warnings for the user (printed by ``submit``, part of ``--dry-run``).
        job_env: environment variables the job gets at submission (literal secrets moved out
            of the recipe); never printed, never written.
        weights: the weights files the job reads (URLs are fetched into the cache by apply).
        weights_dir: the weights cache folder the job reads them from.
        batch: a training run's batch on its processes beside the published one
            (:class:`segctl.batch_plan.BatchPlan`).
        estimate: a training run's expected step time, wall time and GPU-hours
            (:func:`segctl.reproduction.estimate_summary`), None without a basis.
        published_curve: the published training log the run will be compared with
            (:func:`segctl.reproduction.curve_summary`), None where the recipe names none.
    """

    kind: str
    run_id: str
    run_dir: Path
    recipe: Recipe
    source: str
    executor: str
    parameters: ExecutorParams
    args: tuple = ()
    label: str | None = None
    notes: list[str] = field(default_factory=list)
    job_env: dict[str, str] = field(default_factory=dict, repr=False)
    weights: tuple[WeightsFile, ...] = ()
    weights_dir: Path = field(default_factory=default_weights_dir)
    batch: BatchPlan | None = None
    estimate: dict[str, Any] | None = None
    published_curve: dict[str, Any] | None = None

    def sbatch_script(self) -> str | None:
        """The sbatch script of a Slurm plan (None for local jobs), as shown: credentials of
        URLs hidden (:func:`segctl.recipe.secrets.redact_url_credentials`)."""
        if self.executor != "slurm":
            return None
        import sys

        from segctl.recipe.secrets import redact_url_credentials

        return redact_url_credentials(
            executors.render_sbatch(self.parameters, RunDir(self.run_dir).jobs, sys.executable))

    def to_dict(self, probe_sizes: bool = False) -> dict[str, Any]:
        """A JSON-ready summary (what ``--dry-run`` prints); see :meth:`weights_summary` for
        ``probe_sizes``. Credentials of URLs are hidden in every value (the one rule of
        :mod:`segctl.recipe.secrets`)."""
        from segctl.recipe.secrets import redact_secrets

        return redact_secrets({
            "kind": self.kind,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "executor": self.executor,
            "parameters": self.parameters.to_submitit(),
            "label": self.label,
            "data_root": self.recipe.data.root,
            "tracking_uri": self.recipe.tracking.uri,
            "weights_dir": str(self.weights_dir),
            "weights": self.weights_summary(probe_sizes),
            **({"batch": [{"": name, "this run": ours, "published": published}
                          for name, ours, published in self.batch.table()]}
               if self.batch is not None else {}),
            **({"estimate": self.estimate} if self.kind == "train" else {}),
            **({"published_curve": self.published_curve} if self.published_curve else {}),
            "notes": self.notes,
        })

    def weights_summary(self, probe_sizes: bool = False) -> list[dict[str, Any]]:
        """Per weights file: ``field``, ``url``, ``file``, ``cached`` (in the cache, or a local
        file that exists), ``size_bytes`` and ``size`` (human, or ``unknown``). Sizes come from
        the cache or the local file; with ``probe_sizes``, an uncached URL's from the source
        (one ``HEAD``, at most :data:`segctl.weights.SIZE_PROBE_TIMEOUT_S` seconds; unknown
        offline). Nothing is downloaded."""
        from segctl.recipe.secrets import redact_url_credentials
        from segctl.io.weights_cache import local_path, lookup, url_file_name
        from segctl.weights import human_size, remote_size

        rows = []
        for item in self.weights:
            if item.remote:
                entry = lookup(item.url, self.weights_dir)
                cached = entry is not None
                size = entry.size if entry else remote_size(item.url) if probe_sizes else None
            else:
                path = local_path(item.url)
                cached = path.is_file()
                size = path.stat().st_size if cached else None
            rows.append({"field": item.field, "url": redact_url_credentials(item.url),
                         "file": url_file_name(item.url),
                         "cached": cached, "size_bytes": size, "size": human_size(size)})
        return rows


@dataclass(frozen=True)
class SubmittedJob:
    """A job that was submitted: its registry row, executor job id and submitit handle, and
    one line per weights file fetched and checked for it (:func:`fetch_weights`)."""

    row: int
    job_id: str
    plan: SubmitPlan
    handle: Any
    weights: list[str] = field(default_factory=list)


def concretise(recipe: Recipe) -> Recipe:
    """Make a recipe's local data root absolute and its tracking URI concrete (both are left
    out of the run hash, so this does not change the run id)."""
    root = recipe.data.root
    if not is_url(root):
        root = str(Path(root).expanduser().resolve())
    return recipe.model_copy(
        update={
            "data": recipe.data.model_copy(update={"root": root}),
            "tracking": recipe.tracking.model_copy(
                update={"uri": recipe.tracking.uri or default_tracking_uri()}
            ),
        }
    )


def keep_secrets_out(recipe: Recipe, rid: str) -> tuple[Recipe, dict[str, str], list[str]]:
    """``(recipe to write, job environment, notes)``: literal secrets of ``recipe``'s storage
    options replaced by references to variables the job gets in its environment, with a note
    per moved secret. References to variables not set here are noted by the plan, which knows
    the executor and its site profile (:func:`secret_reference_notes`)."""
    from segctl.recipe.secrets import externalize_secrets, literal_secrets, secret_variable

    written, env = externalize_secrets(recipe, rid)
    notes = [
        f"{path} holds a literal secret: it is kept out of the run directory and handed to "
        f"this job in its environment (${var}); later jobs of this run need ${var} exported "
        "again. Prefer an AWS profile or a reference to your own variable (e.g. "
        "secret: ${MY_S3_SECRET})."
        for path, var in ((p, secret_variable(rid, p)) for p in literal_secrets(recipe))
    ]
    return written, env, notes


#: How a note that names something a submit refuses begins (``--dry-run`` lists them all).
REFUSED = "submit would refuse: "


def secret_reference_notes(recipe: Recipe, parameters: ExecutorParams,
                           job_env: dict[str, str]) -> list[str]:
    """A note per ``${VAR}`` reference of ``recipe`` whose variable the job's environment will
    lack (:func:`unset_secret_references`): a submit refuses those."""
    return [f"{REFUSED}{path} refers to ${var}, which is not set here: export it (on Slurm, a "
            "setup line of the site profile may set it instead)"
            for path, var in unset_secret_references(recipe, parameters, job_env)]


def unset_secret_references(recipe: Recipe, parameters: ExecutorParams,
                            job_env: dict[str, str]) -> list[tuple[str, str]]:
    """``(dotted path, variable)`` of each ``${VAR}`` reference of ``recipe`` (storage options,
    URL credentials) whose variable the job's environment will lack.

    A local job inherits exactly this environment plus ``job_env``; a Slurm job this one too
    (``sbatch`` exports it), plus whatever the site profile's ``setup`` lines set, so a
    variable that a setup line names counts as provided.
    """
    from segctl.recipe.secrets import references

    setup = "\n".join(parameters.setup) if isinstance(parameters, executors.SlurmParams) else ""
    return [(path, var) for path, var in references(recipe).items()
            if var not in os.environ and var not in job_env
            and not re.search(rf"\b{re.escape(var)}\b", setup)]


def tracking_placement_notes(recipe: Recipe, parameters: ExecutorParams) -> list[str]:
    """A warning when a Slurm job on several nodes tracks into a local store.

    The default tracking store is an embedded SQLite file on this machine (``sqlite:///``;
    an MLflow file store, ``file:`` or a plain path, is the same). The ranks of a multi-node
    job run on other machines: they reach that file only if it lies on storage every node
    mounts, and SQLite's locking is unreliable on network file systems. An MLflow server is
    reachable from every node. Training goes on either way (records that cannot be delivered
    are buffered in the run directory for ``segctl sync``).
    """
    if not isinstance(parameters, executors.SlurmParams) or parameters.nodes < 2:
        return []
    uri = recipe.tracking.uri or ""
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if scheme not in ("", "sqlite", "file") or uri.startswith("databricks"):
        return []
    store = "an embedded SQLite store" if scheme == "sqlite" else "a local MLflow file store"
    return [
        f"tracking.uri is {store} ({uri}) and this Slurm job spans {parameters.nodes} nodes: "
        "its ranks run on other nodes, which cannot reach a file of this machine (nor lock "
        "SQLite reliably on shared storage). Run an MLflow server and point the job at it: "
        "`tracking.uri: http://HOST:5000` in the recipe, or `export "
        "MLFLOW_TRACKING_URI=http://HOST:5000` before submitting. Until then, what cannot be "
        "delivered is buffered in the run directory (`segctl sync RUN` delivers it)."
    ]


def local_placement_notes(published: ClusterConfig, parameters: executors.LocalParams,
                          batch: BatchPlan) -> list[str]:
    """A note when a recipe published on several processes trains on the local executor,
    which runs one process on this machine (``parameters`` are its submitit parameters):
    the recipe's placement (``published``), and what keeps (accumulation) or changes
    (``--scale-lr linear``) the global batch, from ``batch``.
    """
    from segctl.reproduction import published_processes

    processes = published_processes(published)
    if processes <= 1:
        return []
    how = (f"gradient accumulation {batch.grad_accum_steps} keeps its global batch of "
           f"{batch.published_global_batch}, each iteration taking about "
           f"{batch.grad_accum_steps} micro-batch steps" if batch.global_batch ==
           batch.published_global_batch else
           f"the global batch is {batch.global_batch} instead of "
           f"{batch.published_global_batch}")
    return [
        f"the recipe was published on {published.nodes} node(s) x {published.gpus_per_node} "
        f"GPU(s), {processes} processes; the local executor runs 1 process "
        f"({parameters.gpus_per_node} GPU(s) here): {how}. Submit to Slurm (--cluster slurm, "
        "--profile NAME) for the recipe's placement."
    ]


def with_placement(recipe: Recipe, placement: list[str], source: str) -> Recipe:
    """A stored recipe with placement overrides of its cluster section (run id unchanged)."""
    from segctl.recipe.loader import override_recipe

    return override_recipe(recipe, placement, source)


def plan_training(
    loaded: LoadedRecipe, executor: str | None = None, profile: SiteProfile | None = None,
    *, published_cluster: ClusterConfig | None = None, scale_lr: ScaleLr = "none",
) -> SubmitPlan:
    """The plan for training ``loaded`` (no side effects).

    ``published_cluster`` is the recipe's own placement (default: its ``cluster`` section as
    loaded, placement options included). On fewer processes than that, the plan keeps the
    published global batch by gradient accumulation, or with ``scale_lr="linear"`` scales the
    learning rate (:func:`segctl.reproduction.adapt_batch`), which the run id reflects; the
    plan also estimates the cost and names the published curve (:mod:`segctl.reproduction`).

    Raises:
        SubmitError: the published global batch cannot be kept on these processes (the
            message lists the choices).
    """
    from segctl import reproduction
    from segctl.batch_plan import BatchPlanError
    from segctl.io.home import segctl_home

    recipe = concretise(loaded.recipe)
    kind = executors.choose_executor(recipe.cluster, executor)
    parameters = executors.executor_parameters(kind, recipe.cluster, recipe.name, profile)
    try:
        recipe, batch = reproduction.adapt_batch(recipe, parameters,
                                                 published_cluster or recipe.cluster, scale_lr)
    except BatchPlanError as exc:
        raise SubmitError(str(exc)) from None
    rid = run_id(recipe)
    weights = tuple(recipe_weights(recipe))  # the URLs the job reads, credentials included
    recipe, env, notes = keep_secrets_out(recipe, rid)
    parameters = executors.executor_parameters(kind, recipe.cluster, rid, profile)
    notes += list(batch.notes)
    cache = weights_dir(profile)
    curve = reproduction.cached_curve(recipe, cache)
    estimate = reproduction.estimate_cost(recipe, parameters, batch, curve, segctl_home())
    if estimate is not None:
        notes += list(estimate.warnings)
    notes += secret_reference_notes(recipe, parameters, env)
    notes += tracking_placement_notes(recipe, parameters)
    if kind == "local":
        notes += local_placement_notes(published_cluster or loaded.recipe.cluster,
                                       parameters, batch)
    return SubmitPlan(
        kind="train",
        run_id=rid,
        run_dir=runs_dir() / rid,
        recipe=recipe,
        source=loaded.source,
        executor=kind,
        parameters=parameters,
        notes=notes,
        job_env=env,
        weights=weights,
        weights_dir=cache,
        batch=batch,
        estimate=reproduction.estimate_summary(estimate),
        published_curve=reproduction.curve_summary(recipe, curve),
    )


def check_pretraining(recipe: Recipe, from_scratch: bool) -> list[str]:
    """Refuse to train from scratch by accident.

    A recipe with a ``reference`` (a published result it reproduces) and no
    ``model.init_checkpoint`` would train from random weights and fall short of the reference;
    that takes ``from_scratch`` (``--from-scratch``). Recipes without a reference (e.g.
    ``recipes/quickstart.yaml``) train from scratch without it.

    Returns:
        Notes for the user: ``from_scratch`` has no effect on a recipe that names weights.

    Raises:
        SubmitError: a reference, no init checkpoint, and not ``from_scratch``.
    """
    init = recipe.model.init_checkpoint
    if recipe.reference is not None and not init and not from_scratch:
        raise SubmitError(
            f"recipe {recipe.name} reproduces a published result ({recipe.reference.source}) "
            "but names no pretrained weights (model.init_checkpoint), so it would train from "
            "scratch and fall short of the reference. Set model.init_checkpoint to the weights "
            "its source starts from, or pass --from-scratch to train from scratch on purpose"
        )
    if from_scratch and init:
        return [f"--from-scratch has no effect: the recipe starts from {init} "
                "(model.init_checkpoint); add --set model.init_checkpoint=null to train from "
                "scratch (another run id)"]
    return []


def plan_evaluation(
    run_dir: Path,
    recipe: Recipe,
    source: str,
    checkpoint: str | None,
    ms_flip: bool | None,
    executor: str | None = None,
    profile: SiteProfile | None = None,
    *,
    output_format: OutputFormat | str = OutputFormat.METRICS,
    published: bool = False,
) -> SubmitPlan:
    """The plan for evaluating a run (no side effects).

    Every choice of the job is made here, once, into the :class:`EvalRequest` that is the
    job's one argument after the run directory (``plan.args == (request,)``): ``ms_flip`` None
    takes the recipe's ``eval.ms_flip``; the label is ``<ss|ms_flip>-<YYYYmmdd-HHMMSS>``,
    prefixed ``published-`` with ``published`` (the checkpoint is ``reference.checkpoint``).

    Raises:
        ValueError: an ``output_format`` that is not an :class:`OutputFormat` value.
    """
    recipe = concretise(recipe)
    use_ms_flip = recipe.eval.ms_flip if ms_flip is None else ms_flip
    label = f"{'ms_flip' if use_ms_flip else 'ss'}-{time.strftime('%Y%m%d-%H%M%S')}"
    request = EvalRequest(
        ms_flip=bool(use_ms_flip), checkpoint=checkpoint,
        label=f"published-{label}" if published else label,
        output_format=output_format, published=published,
    )
    kind = executors.choose_executor(recipe.cluster, executor)
    recipe, env, notes = keep_secrets_out(recipe, run_dir.name)
    parameters = executors.executor_parameters(kind, recipe.cluster, f"eval-{run_dir.name}",
                                               profile)
    notes += secret_reference_notes(recipe, parameters, env)
    notes += tracking_placement_notes(recipe, parameters)
    return SubmitPlan(
        kind="eval",
        run_id=run_dir.name,
        run_dir=run_dir,
        recipe=recipe,
        source=source,
        executor=kind,
        parameters=parameters,
        args=(request,),
        label=request.label,
        notes=notes,
        job_env=env,
        weights=evaluation_weights(checkpoint, run_dir, bool(recipe.train.checkpoint_dir)),
        weights_dir=weights_dir(profile),
    )


def preflight(loaded: LoadedRecipe, recipe: Recipe) -> list[RecipeIssue]:
    """Cheap checks before submitting: the dataset root exists, each split lists in its
    layout, and a few image/label pairs per split decode with matching sizes
    (:func:`trainer.data.inspect.quick_check`), so a misconfigured root fails in seconds here
    rather than minutes into a job.

    Remote (fsspec URL) roots are left to the job. A root that cannot be looked at (no
    permission on a folder above it, a file system that does not answer) is a problem too.
    Returns the problems found (empty if none).
    """
    root = recipe.data.root
    if is_url(root):
        return []
    try:
        is_dir = Path(root).is_dir()
    except OSError as exc:  # is_dir answers False only for "not there"; EACCES etc. raise
        return [loaded.issue("data.root", f"dataset folder {root} cannot be reached "
                             f"({exc.strerror or exc}): check its path and permissions")]
    if not is_dir:
        return [
            loaded.issue(
                "data.root",
                f"dataset folder {root} does not exist: point data.root at the dataset, or create "
                "it (e.g. `segctl data synthesize DIR` for a small synthetic Cityscapes set)",
            )
        ]
    from trainer.data.inspect import quick_check  # imports torch: only here

    from segctl.recipe import dataset_preset

    preset = dataset_preset(recipe)
    splits = list(dict.fromkeys((recipe.data.train_split, recipe.data.val_split)))
    problems = quick_check(
        preset.layout,
        root,
        splits,
        reduce_zero_label=preset.reduce_zero_label,
        ignore_index=preset.ignore_index,
    )
    return [loaded.issue("data.root", problem) for problem in problems]


def dataset_key(recipe: Recipe) -> tuple:
    """What :func:`preflight` checks of a recipe: members of a sweep that share it share the
    result."""
    data = recipe.data
    return (data.dataset, data.root, data.train_split, data.val_split)


#: How long a passed :func:`preflight` of an unchanged dataset is remembered (seconds).
PREFLIGHT_MEMORY_S = 24 * 3600.0


def _dataset_fingerprint(root: Path, depth: int = 4, limit: int = 5000) -> list | None:
    """The modification times of ``root`` and the folders below it, ``depth`` levels deep (a
    file added, removed or renamed in any of them changes one); None past ``limit`` folders
    or where a folder cannot be read."""
    marks, level = [], [root]
    try:
        for _ in range(depth + 1):
            below = []
            for folder in level:
                marks.append((str(folder), folder.stat().st_mtime_ns))
                below += [Path(e.path) for e in os.scandir(folder) if e.is_dir()]
            if len(marks) + len(below) > limit:
                return None
            level = sorted(below)
    except OSError:
        return None
    return marks


def preflight_remembered(loaded: LoadedRecipe, recipe: Recipe) -> list[RecipeIssue]:
    """:func:`preflight`, skipped when the same dataset (:func:`dataset_key`) passed it within
    :data:`PREFLIGHT_MEMORY_S` and no file was added, removed or renamed in its folders
    since (:func:`_dataset_fingerprint`; a file rewritten in place is not noticed). The check
    imports torch (seconds on a login node); a sweep resubmitted over the same dataset need
    not pay that again. Passes are kept in ``$SEGCTL_HOME/preflight.json``; problems are
    never remembered."""
    import hashlib
    import json

    from segctl.io.home import segctl_home

    root = recipe.data.root
    marks = None if is_url(root) else _dataset_fingerprint(Path(root))
    if marks is None:
        return preflight(loaded, recipe)
    key = hashlib.sha256(json.dumps([dataset_key(recipe), marks]).encode()).hexdigest()
    memory = segctl_home() / "preflight.json"
    now = time.time()
    try:
        passed = {k: float(t) for k, t in json.loads(memory.read_text()).items()
                  if now - float(t) < PREFLIGHT_MEMORY_S}
    except (OSError, ValueError, TypeError, AttributeError):  # none yet, or unreadable
        passed = {}
    if key in passed:
        return []
    issues = preflight(loaded, recipe)
    if not issues:
        try:
            memory.parent.mkdir(parents=True, exist_ok=True)
            partial = memory.with_name(f".{memory.name}.{os.getpid()}")
            partial.write_text(json.dumps({**passed, key: now}))
            os.replace(partial, memory)
        except OSError:
            pass  # remembering is an optimisation only
    return issues


def refusals(loaded: LoadedRecipe, plan: SubmitPlan, datasets: dict | None = None) -> list[str]:
    """Everything a submit of the training ``plan`` would refuse, as notes, raising nothing
    (``--dry-run`` lists them): the dataset checks of :func:`preflight` (each with the recipe
    file and line), a run directory name segctl cannot use, and a local weights file that
    does not exist or is not a PyTorch file of tensors (checked without torch; URLs are
    fetched and checked only by a submit). Unset ``${VAR}`` references are already notes of
    the plan (:func:`secret_reference_notes`).

    ``datasets`` (:func:`dataset_key` → those notes), where given, keeps the dataset notes
    of earlier calls, so the members of a sweep check their shared dataset once.
    """
    from segctl.io.weights_cache import WeightsError, local_path
    from segctl.weights import inspect_weights_file

    datasets = {} if datasets is None else datasets
    key = dataset_key(plan.recipe)
    if key not in datasets:
        datasets[key] = [f"{REFUSED}{issue.render()}" for issue in preflight(loaded, plan.recipe)]
    notes = list(datasets[key])
    try:
        _check_run_dir(plan)
    except SubmitError as exc:
        notes.append(f"{REFUSED}{exc}")
    for item in plan.weights:
        if not item.remote:
            path = local_path(item.url)
            try:
                inspect_weights_file(path, f"{item.field} ({path})")
            except WeightsError as exc:
                notes.append(f"{REFUSED}{exc}")
    return notes


def job_in_progress(plan: SubmitPlan,
                    registry: Registry | None) -> tuple[JobRecord, str] | None:
    """The newest job of the plan's run and kind (for an evaluation, of the same label) that
    is in progress, with its refreshed state; None if there is none (or no ``registry``)."""
    from segctl.status import live_jobs

    if registry is None:
        return None
    same = [job for job in registry.jobs(plan.run_id)
            if job.kind == plan.kind and (plan.kind == "train" or job.label == plan.label)]
    running = live_jobs(registry, same)
    return running[-1] if running else None


@dataclass(frozen=True)
class NotSubmitted:
    """Why a submit of a training plan submits nothing (:func:`why_not_submitted`).

    Attributes:
        reason: what the run is doing, after its id: ``"has a training job in progress
            (local job 12, RUNNING)"`` or ``"has finished training (iteration 300/300,
            mIoU 67.44)"``.
        job: the job in progress, if that is the reason (None: the run has finished training).
    """

    reason: str
    job: JobRecord | None = None


def why_not_submitted(plan: SubmitPlan, registry: Registry | None,
                      rerun: bool) -> NotSubmitted | None:
    """Why a submit of the training ``plan`` submits nothing, or None if it submits: its run
    has a training job in progress (:func:`job_in_progress`), or has finished training
    (:func:`segctl.runs.finished_training`; not with ``rerun``)."""
    from segctl.runs import finished_training

    running = job_in_progress(plan, registry)
    if running is not None:
        job, state = running
        return NotSubmitted(
            f"has a training job in progress ({job.executor} job {job.job_id}, {state})", job)
    finished = None if rerun else finished_training(plan.run_dir)
    return None if finished is None else NotSubmitted(f"has finished training ({finished})")


def apply(plan: SubmitPlan, registry: Registry) -> SubmittedJob:
    """Carry out ``plan``: weights (:func:`fetch_weights`), run directory, registry marker,
    submission (the job gets ``weights_dir``), job id.

    Raises:
        SubmitError: the run already has an unfinished job of the same kind; a weights file
            cannot be fetched, fails its checksum or does not load (nothing is created).
        segctl.runs.RunDirError: the run directory belongs to something else.
    """
    (job,) = _submit([plan], registry, RunDir(plan.run_dir).jobs)
    return job


def apply_sweep(plans: list[SubmitPlan], registry: Registry, sweep: str) -> list[SubmittedJob]:
    """Submit the training plans of a sweep as one job array (one job each, locally).

    Every run's weights are fetched first (:func:`fetch_weights`), then every run gets its
    directory and registry row (tagged with ``sweep``) before anything is submitted; the array's
    files live in ``<runs dir>/sweeps/<sweep>``.

    The members to submit are chosen by the caller: ``segctl submit`` leaves out those that
    have finished training or have a job in progress (:func:`why_not_submitted`).

    Raises:
        SubmitError: a member run already has a training job in progress (one started since
            the caller looked), or a weights file cannot be fetched or does not load.
    """
    return _submit(plans, registry, runs_dir() / "sweeps" / sweep, sweep)


def _submit(
    plans: list[SubmitPlan], registry: Registry, folder: Path, sweep: str | None = None
) -> list[SubmittedJob]:
    """The one submit path of :func:`apply` and :func:`apply_sweep`, for plans that share an
    executor and its parameters (the first plan's).

    In order: every plan is checked (run directory name, secret references, no unfinished job
    of its kind), every plan's weights fetched and checked, the tracking store created, every
    training run's directory created and every run registered (tagged with ``sweep``), the
    private job ``folder`` created, and one ``SUBMITTING`` marker written per plan; then all
    are submitted (a sweep as one job array, in submitit's ``batch``) and each marker gets its
    job id. A failed submission removes the markers and raises.
    """
    from segctl.jobs import EvalJob, TrainJob

    for plan in plans:
        _check_run_dir(plan)
        _check_secret_references(plan)
        _refuse_if_active(plan, registry)
    fetched = [fetch_weights(plan) for plan in plans]
    _ensure_tracking_store(plans[0])
    for plan in plans:
        if plan.kind == "train":
            create_run_dir(plan.run_dir, plan.recipe)
        _register_run(plan, registry, sweep)
    folder = create_private_dir(folder)
    rows = [registry.begin_job(p.run_id, p.kind, p.executor, str(folder), p.label) for p in plans]
    first = plans[0]
    try:
        executor = executors.make_executor(
            first.executor, folder, first.parameters, first.recipe.cluster.max_requeues
        )
        env = {k: v for plan in plans for k, v in plan.job_env.items()}
        with executors.interruptible_children(), executors.job_environment(env), \
                executors.detached_stdio(first.executor, folder), \
                executor.batch() if sweep is not None else nullcontext():
            handles = [
                executor.submit(TrainJob() if plan.kind == "train" else EvalJob(),
                                str(plan.run_dir), *plan.args, weights_dir=str(plan.weights_dir))
                for plan in plans
            ]
    except Exception:
        for row in rows:
            registry.forget_job(row)
        raise
    submitted = []
    for plan, row, handle, weights in zip(plans, rows, handles, fetched):
        registry.submitted(row, str(handle.job_id))
        submitted.append(SubmittedJob(row=row, job_id=str(handle.job_id), plan=plan, handle=handle,
                                      weights=weights))
    return submitted


def fetch_weights(plan: SubmitPlan, progress: bool = True) -> list[str]:
    """Fetch the plan's weights URLs into its cache and check that each loads into the
    recipe's model (:func:`segctl.weights.fetch_and_check`; a progress line on stderr). Local
    files are checked without torch (exist, readable, a PyTorch file of tensors:
    :func:`segctl.weights.inspect_weights_file`, milliseconds) and loaded by the job.

    A training run's published log (``reference.log``) is fetched too, for the job's
    comparison with it (:mod:`trainer.published_guard`); a log that cannot be fetched is
    said in the returned lines, never refused.

    Returns:
        One line per file for the user (file, size, SHA-256, what loaded).

    Raises:
        SubmitError: a file cannot be fetched, fails its checksum, does not load, or is not a
            PyTorch file of tensors; the message names the field and the file.
    """
    from segctl.io.weights_cache import WeightsError
    from segctl.reproduction import fetch_published_log
    from segctl.weights import fetch_and_check

    lines = []
    if plan.weights:
        try:
            lines = fetch_and_check(plan.weights, plan.recipe, plan.weights_dir,
                                    progress=progress)
        except WeightsError as exc:
            raise SubmitError(str(exc)) from None
    if plan.kind == "train":  # the published curve is a comparison, never a reason to refuse
        try:
            line = fetch_published_log(plan.recipe, plan.weights_dir, progress=progress)
        except WeightsError as exc:
            line = (f"reference.log not fetched ({exc}): the run trains without the "
                    "comparison with its published curve")
        lines += [line] if line else []
    return lines


def _ensure_tracking_store(plan: SubmitPlan) -> None:
    """Create a missing embedded MLflow store once, here, before jobs race to create it (under
    a lock, so concurrent submissions do not race either: :mod:`segctl.io.tracking_store`)."""
    from segctl.io.tracking_store import ensure_store

    ensure_store(plan.recipe.tracking.uri or "")


def _check_run_dir(plan: SubmitPlan) -> None:
    from segctl.recipe.fields import check_no_control

    try:
        check_no_control(str(plan.run_dir), "run directory")
    except ValueError as exc:
        raise SubmitError(f"{exc}: choose a runs directory without newlines (SEGCTL_RUNS_DIR)") from None


def _check_secret_references(plan: SubmitPlan) -> None:
    """Refuse a job whose storage options refer to a variable its environment will lack
    (:func:`unset_secret_references`): it would fail at start, after it waited in the queue."""
    missing = [f"{path} (${var})" for path, var
               in unset_secret_references(plan.recipe, plan.parameters, plan.job_env)]
    if missing:
        raise SubmitError(
            f"storage options refer to unset environment variables: {', '.join(missing)}; "
            "export them (or submit with the recipe file, which sets segctl's own ones again)"
        )


def _refuse_if_active(plan: SubmitPlan, registry: Registry) -> None:
    jobs = [job for job in registry.jobs(plan.run_id) if job.kind == plan.kind and job.job_id]
    states = refresh_states(registry, jobs)
    active = [job for job in jobs if states[job.id] not in TERMINAL_STATES]
    if active:
        raise SubmitError(
            f"run {plan.run_id} already has a {plan.kind} job in progress (job {active[0].job_id}); "
            f"see `segctl status {plan.run_id}` or cancel it first"
        )


def _register_run(plan: SubmitPlan, registry: Registry, sweep: str | None = None) -> None:
    """Record the run (a registered run keeps its row) with its overrides, which also go to
    ``RUN_DIR/overrides.json`` for the job to tag in MLflow (:mod:`segctl.recipe.overrides`)."""
    from segctl.recipe.overrides import run_overrides, write_overrides

    overrides = run_overrides(plan.source, plan.recipe)
    if overrides is not None:
        write_overrides(plan.run_dir, overrides)
    registry.add_run(
        RunRecord(
            run_id=plan.run_id,
            name=plan.recipe.name,
            recipe_hash=recipe_hash(plan.recipe),
            run_dir=str(plan.run_dir),
            source=plan.source,
            created_at=time.time(),
            sweep=sweep,
            overrides=tuple(overrides or ()),
        )
    )
