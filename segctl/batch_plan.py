"""The published global batch on the processes a submission gets.

A recipe states the placement its source trained with (``cluster``: nodes x GPUs per node,
one process per GPU) and the per-process batch (``train.batch_size``), so its published global
batch is ``processes x batch_size x train.grad_accum_steps``. A submission may get fewer
processes (``--nodes``/``--gpus-per-node``, or the local executor's one process). Then:

- by default the global batch is kept by gradient accumulation: ``grad_accum_steps`` becomes
  ``published global batch / (processes x batch_size)`` where that divides evenly; otherwise
  the submission is refused with the choices spelled out;
- with ``--scale-lr linear`` accumulation stays as the recipe has it and the learning rate is
  scaled by the batch ratio ``r = new global batch / published global batch`` (the linear
  scaling rule: Goyal et al. 2017, "Accurate, Large Minibatch SGD", section 2.1), and the
  warm-up iterations by ``1 / r``, so warm-up covers the same number of images. The number of
  iterations is kept: the run sees ``r`` times the images the published one saw.

More processes than the recipe's leave the per-process batch and accumulation as they are and
give a larger global batch: a note says so (``--scale-lr linear`` scales the learning rate).

With BatchNorm (and SyncBN), statistics are computed per micro-batch (per process group for
SyncBN), so accumulation is close to, not the same as, one large batch: a note says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ScaleLr = Literal["none", "linear"]


class BatchPlanError(ValueError):
    """The published global batch cannot be kept on the given processes; the message lists
    the choices."""


@dataclass(frozen=True)
class BatchPlan:
    """How a run's batch is made on its processes, beside the published one.

    Attributes:
        processes, published_processes: processes (one per GPU; the local executor's one on a
            CPU) of this submission and of the recipe's ``cluster``.
        batch_size: images per process per micro-batch (``train.batch_size``).
        grad_accum_steps, published_grad_accum_steps: micro-batches per optimizer step.
        lr, published_lr: the base learning rate (``optim.lr``).
        warmup_iters, published_warmup_iters: linear warm-up iterations.
        max_iters: optimizer steps (unchanged by the plan).
        notes: what the user should know (accumulation chosen, BatchNorm, a larger batch).
    """

    processes: int
    published_processes: int
    batch_size: int
    grad_accum_steps: int
    published_grad_accum_steps: int
    lr: float
    published_lr: float
    warmup_iters: int
    published_warmup_iters: int
    max_iters: int | None
    notes: tuple[str, ...] = ()

    @property
    def global_batch(self) -> int:
        """Images per optimizer step over all processes."""
        return self.processes * self.batch_size * self.grad_accum_steps

    @property
    def published_global_batch(self) -> int:
        return self.published_processes * self.batch_size * self.published_grad_accum_steps

    @property
    def overrides(self) -> list[str]:
        """The ``--set`` items that give a recipe this plan (empty when nothing changes)."""
        items = []
        if self.grad_accum_steps != self.published_grad_accum_steps:
            items.append(f"train.grad_accum_steps={self.grad_accum_steps}")
        if self.lr != self.published_lr:
            items.append(f"optim.lr={self.lr!r}")
        if self.warmup_iters != self.published_warmup_iters:
            items.append(f"schedule.warmup_iters={self.warmup_iters}")
        return items

    def table(self) -> list[tuple[str, str, str]]:
        """``(quantity, this run, published)`` rows for the plan."""
        return [
            ("processes", str(self.processes), str(self.published_processes)),
            ("batch per process", str(self.batch_size), str(self.batch_size)),
            ("gradient accumulation", str(self.grad_accum_steps),
             str(self.published_grad_accum_steps)),
            ("global batch", str(self.global_batch), str(self.published_global_batch)),
            ("learning rate", f"{self.lr:g}", f"{self.published_lr:g}"),
            ("warm-up iterations", str(self.warmup_iters), str(self.published_warmup_iters)),
            ("iterations", str(self.max_iters), str(self.max_iters)),
        ]


def plan_batch(*, processes: int, published_processes: int, batch_size: int,
               grad_accum_steps: int, lr: float, warmup_iters: int, max_iters: int | None,
               has_batchnorm: bool, scale_lr: ScaleLr = "none") -> BatchPlan:
    """The batch of a run on ``processes`` processes of a recipe published on
    ``published_processes`` (see the module's docstring).

    Raises:
        BatchPlanError: fewer processes than published, no ``scale_lr``, and the published
            global batch is not a multiple of ``processes x batch_size``; the message gives
            the process counts that keep it and the ``--scale-lr linear`` alternative.
        ValueError: a count below 1.
    """
    if min(processes, published_processes, batch_size, grad_accum_steps) < 1:
        raise ValueError("processes, batch size and accumulation must be at least 1")
    published_global = published_processes * batch_size * grad_accum_steps
    common = dict(processes=processes, published_processes=published_processes,
                  batch_size=batch_size, published_grad_accum_steps=grad_accum_steps,
                  published_lr=lr, published_warmup_iters=warmup_iters, max_iters=max_iters)
    notes: list[str] = []
    if processes == published_processes:
        return BatchPlan(grad_accum_steps=grad_accum_steps, lr=lr, warmup_iters=warmup_iters,
                         **common)
    if scale_lr == "linear":
        ratio = processes * batch_size * grad_accum_steps / published_global
        scaled_warmup = int(round(warmup_iters / ratio))
        notes.append(f"--scale-lr linear: global batch {processes * batch_size * grad_accum_steps}"
                     f" instead of the published {published_global}; learning rate x{ratio:g}, "
                     f"warm-up {warmup_iters} -> {scaled_warmup} iterations; iterations kept "
                     f"(the run sees {ratio:g}x the published number of images)")
        return BatchPlan(grad_accum_steps=grad_accum_steps, lr=lr * ratio,
                         warmup_iters=scaled_warmup, notes=tuple(notes), **common)
    if processes > published_processes:
        notes.append(f"{processes} processes give a global batch of "
                     f"{processes * batch_size * grad_accum_steps}, not the published "
                     f"{published_global}: the learning rate is the recipe's; add --scale-lr "
                     "linear to scale it")
        return BatchPlan(grad_accum_steps=grad_accum_steps, lr=lr, warmup_iters=warmup_iters,
                         notes=tuple(notes), **common)
    per_step = processes * batch_size
    if published_global % per_step:
        keep = [p for p in range(1, published_processes + 1)
                if published_global % (p * batch_size) == 0]
        raise BatchPlanError(
            f"the published global batch {published_global} ({published_processes} processes x "
            f"{batch_size} images x {grad_accum_steps}) is not a multiple of {processes} "
            f"processes x {batch_size} images, so accumulation cannot keep it. Choose one: "
            f"a process count that divides it ({', '.join(map(str, keep))}: --nodes and "
            "--gpus-per-node); or --scale-lr linear to train with a global batch of "
            f"{per_step * grad_accum_steps} and a learning rate scaled to it"
        )
    accumulation = published_global // per_step
    notes.append(f"gradient accumulation {accumulation}: {_count(processes, 'process')} x "
                 f"{_count(batch_size, 'image')} x {accumulation} = the published global batch "
                 f"{published_global}")
    if has_batchnorm:
        notes.append("BatchNorm statistics are computed per micro-batch of "
                     f"{_count(batch_size, 'image')} on each process (SyncBN: over "
                     f"{_count(processes, 'process')} instead of {published_processes}); "
                     "accumulation reproduces "
                     "the gradient of the published batch, not its normalisation statistics")
    return BatchPlan(grad_accum_steps=accumulation, lr=lr, warmup_iters=warmup_iters,
                     notes=tuple(notes), **common)



def _count(n: int, noun: str) -> str:
    """``1 process``, ``8 processes``, ``2 images``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("s") else f"{n} {noun}s"
