"""The names of what segctl records in MLflow: tags, params and metrics, and the artifact
files of a run, written down once.

The trainer writes them (:mod:`trainer.tracking`, the validation and evaluation code) and the
control plane reads them back (:mod:`segctl.tracking_query`: ``segctl report``, ``segctl
sync``, the report index), so a name changed here changes on both sides. Both planes import
this module; it imports nothing beyond the standard library.

Conventions: segmentation scores are logged in percent (``mIoU``, ``aAcc``, ``mAcc``,
``IoU.<class>``), with the iteration as step; evaluation jobs prefix them with
``eval/<mode>/`` (segctl's own weights) or ``published/<mode>/`` (``segctl eval
--published``), ``<mode>`` being ``ss`` or ``ms_flip``.
"""

from __future__ import annotations

from typing import Literal

# --- tags (strings) -----------------------------------------------------------------------------

#: The hash of the resolved recipe: every run segctl logs has it (the report groups by it).
RECIPE_HASH = "segctl.recipe_hash"
#: segctl's run id, ``<recipe-name>-<hash8>``.
RUN_ID = "segctl.run_id"
#: ``local`` or ``slurm``.
EXECUTOR = "segctl.executor"
#: The executor's job id.
JOB_ID = "segctl.job_id"
#: The installed segctl version.
VERSION = "segctl.version"
#: Node count of the job, and the GPUs it computed on (``0`` for a job on CPUs, whatever the
#: recipe's ``cluster.gpus_per_node`` asked for).
NODES = "segctl.nodes"
GPUS = "segctl.gpus"
#: How the run differs from its recipe file (``--set``, ``--sweep``): ``a.b=value`` items
#: separated by spaces, secrets hidden (:mod:`segctl.recipe.overrides`); absent for none.
OVERRIDES = "segctl.overrides"
#: The published training log a run is compared with (``reference.log``), and whether the run
#: ever fell behind it (``true``/``false``; :mod:`trainer.published_guard`).
PUBLISHED_CURVE = "segctl.published_curve"
BEHIND_PUBLISHED = "segctl.behind_published"
#: Prefix of the published curve's metrics (``published_curve/loss``, ``.../lr``,
#: ``.../mIoU``), logged at the published iterations under the run's own.
PUBLISHED_CURVE_PREFIX = "published_curve/"
#: The published curve's mIoU at its evaluations; its latest value is the final one.
PUBLISHED_CURVE_MIOU = f"{PUBLISHED_CURVE_PREFIX}mIoU"
#: Inside Slurm: the job id and node list of the allocation.
SLURM_JOB_ID = "segctl.slurm_job_id"
SLURM_NODELIST = "segctl.slurm_nodelist"
#: The commit of the source tree (``+dirty`` with uncommitted changes).
GIT_COMMIT = "segctl.git_commit"
#: Where the final checkpoint is (a path, or a URL under ``train.checkpoint_dir``).
FINAL_CHECKPOINT = "segctl.final_checkpoint"
#: The checkpoint a resumed job continued from.
RESUMED_FROM = "segctl.resumed_from"
#: Why the newer checkpoints were set aside on that resume.
REJECTED_CHECKPOINTS = "segctl.rejected_checkpoints"
#: A run rebuilt from its journal: the id of the MLflow run that was lost.
REBUILT_FROM_JOURNAL = "segctl.rebuilt_from_journal"
#: A rebuilt run: ``true`` when the journal held every record, else ``false``.
JOURNAL_COMPLETE = "segctl.journal_complete"

# --- params (strings): the flattened recipe (dotted keys) and these ------------------------------

#: ``true`` when training starts without pretrained weights, else ``false``.
FROM_SCRATCH = "segctl.from_scratch"
#: Images per optimizer step over all processes: ``train.batch_size`` x processes x
#: ``train.grad_accum_steps``.
GLOBAL_BATCH_SIZE = "segctl.global_batch_size"
NAME = "name"
DATASET = "data.dataset"
MODEL = "model.name"
EVAL_MS_FLIP = "eval.ms_flip"
MAX_ITERS = "schedule.max_iters"
REFERENCE_MIOU_SS = "reference.miou_ss"
REFERENCE_MIOU_MS_FLIP = "reference.miou_ms_flip"
REFERENCE_SPLIT = "reference.split"
REFERENCE_SOURCE = "reference.source"

# --- metrics (floats) ---------------------------------------------------------------------------

LOSS = "loss"
LR = "lr"
#: Validation mIoU during training (percent), in the recipe's own test mode.
MIOU = "mIoU"
#: The scores :func:`trainer.tracking.metrics_in_percent` keeps (plus ``IoU.<class>``).
SCORES = ("aAcc", "mIoU", "mAcc")
#: The prefix of a per-class IoU metric: ``IoU.<class>``.
CLASS_IOU_PREFIX = "IoU."
#: The iterations a run has trained, at the end of each job.
ITERATIONS_DONE = "iterations_done"
#: GPU count times hours, summed over the jobs of the run (0 for jobs on CPUs).
GPU_HOURS = "gpu_hours"
#: CPU cores times hours, summed over the jobs of the run that computed on CPUs (not logged
#: for jobs on GPUs): the cores each process could run on (its CPU affinity) over all
#: processes.
CORE_HOURS = "core_hours"

Mode = Literal["ss", "ms_flip"]
#: The test modes: single scale, and multi-scale with flip.
MODES: tuple[Mode, ...] = ("ss", "ms_flip")


def eval_prefix(mode: Mode, published: bool = False) -> str:
    """``eval/<mode>/`` (segctl eval), or ``published/<mode>/`` (segctl eval --published)."""
    return f"{'published' if published else 'eval'}/{mode}/"


def eval_miou(mode: Mode, published: bool = False) -> str:
    """``eval/<mode>/mIoU`` or ``published/<mode>/mIoU``."""
    return eval_prefix(mode, published) + MIOU


# --- artifacts (relative paths in the run's artifact store) --------------------------------------

#: The resolved recipe, secrets redacted.
RECIPE_ARTIFACT = "recipe.json"
#: Training loss and validation mIoU over iterations.
LEARNING_CURVE_ARTIFACT = "plots/learning_curve.png"


def per_class_iou_artifact(iteration: int) -> str:
    """``plots/per_class_iou_iter_<iteration:07d>.png``: the bar chart of one validation."""
    return f"plots/per_class_iou_iter_{int(iteration):07d}.png"


def validation_table_artifact(iteration: int) -> str:
    """``tables/iter_<iteration:07d>.txt``: the metrics table of one validation."""
    return f"tables/iter_{int(iteration):07d}.txt"


def eval_table_artifact(label: str) -> str:
    """``eval/<label>.txt``: the metrics table of one evaluation."""
    return f"eval/{label}.txt"


def overlay_artifact(step: int, sample: int) -> str:
    """``overlays/iter_<step:07d>/sample_<sample>.png``: one prediction overlay."""
    return f"overlays/iter_{int(step):07d}/sample_{sample}.png"


def eval_overlay_artifact(label: str, sample: int) -> str:
    """``overlays/<label>/sample_<sample>.png``: one prediction overlay of the evaluation named
    ``label`` (the evaluation request's label, as ``eval/<label>.txt``)."""
    return f"overlays/{label}/sample_{int(sample)}.png"
