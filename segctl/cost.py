"""What a training run will cost before it runs: measured step times, and the estimate.

``segctl bench RECIPE`` times real training steps of a recipe on the machine it runs on
(:mod:`trainer.step_timing`) and keeps the figure in ``$SEGCTL_HOME/bench.json``, one entry
per (step key, device). The step key (:func:`step_key`) covers what decides a step's cost: the
model and its options, the crop, the per-process batch, the precision and the optimizer type;
not the schedule or the dataset's root, so a measured figure serves every run of that shape.

A plan estimates seconds per optimizer step as the per-process step time times the gradient
accumulation (each process runs that many micro-batches per step; the all-reduce is not
counted), from, in order of preference:

1. a measured figure for the recipe's step on the target device (this machine's device for a
   local job; for Slurm, the most recent GPU measurement);
2. the published log's median seconds per iteration (``reference.log``, when it is in the
   weights cache), measured by the source on its own GPUs with its own placement: scaled by
   the accumulation the plan needs to keep the published global batch.

Wall time is that times ``schedule.max_iters`` (evaluation time not included); GPU-hours are
wall hours times the GPUs. A measured peak memory above the target GPU's memory is a warning.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segctl.io.atomic import atomic_write_json

#: File, in ``$SEGCTL_HOME``, of the measured step times.
BENCH_FILE = "bench.json"


@dataclass(frozen=True)
class Measurement:
    """One measured step time of a recipe's step on one device.

    Attributes:
        step_key: :func:`step_key` of the recipe measured; ``recipe``: its name.
        device: ``cuda <name>`` or ``cpu``; ``gpu_memory_gib``: the GPU's memory (None: CPU).
        seconds_per_iter: median seconds of one step of one process at ``batch`` images of
            ``crop`` (height, width) pixels, in ``precision``.
        peak_memory_gib: peak device memory (GiB; the process's peak resident set on a CPU).
        iters: timed iterations; ``threads``: CPU threads; ``measured_at``: UTC, ISO 8601.
    """

    step_key: str
    recipe: str
    device: str
    gpu_memory_gib: float | None
    seconds_per_iter: float
    peak_memory_gib: float
    precision: str
    batch: int
    crop: tuple[int, int]
    iters: int
    threads: int
    measured_at: str


def step_key(recipe: Any) -> str:
    """16 hex digits naming what decides the cost of one training step of ``recipe``: the
    model section (name, options, initial weights excluded), ``data.crop_size``,
    ``train.batch_size``, ``train.precision``, ``train.tf32`` and ``optim.type``."""
    model = recipe.model.model_dump(mode="json", exclude={"init_checkpoint"})
    shape = {"model": model, "crop": list(recipe.data.crop_size),
             "batch": recipe.train.batch_size, "precision": recipe.train.precision,
             "tf32": recipe.train.tf32, "optim": recipe.optim.type}
    text = json.dumps(shape, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _store(home: Path) -> Path:
    return Path(home) / BENCH_FILE


def read_measurements(home: Path) -> list[Measurement]:
    """Every kept measurement (an unreadable file counts as none)."""
    try:
        data = json.loads(_store(home).read_text())
    except (OSError, ValueError):
        return []
    found = []
    for item in data.get("measurements", []) if isinstance(data, dict) else []:
        try:
            item = dict(item, crop=tuple(item["crop"]))
            found.append(Measurement(**item))
        except (TypeError, KeyError):
            continue
    return found


def record_measurement(home: Path, measurement: Measurement) -> Path:
    """Keep ``measurement``, replacing an earlier one of the same step key and device;
    returns the file (written atomically)."""
    kept = [m for m in read_measurements(home)
            if (m.step_key, m.device) != (measurement.step_key, measurement.device)]
    kept.append(measurement)
    data = {"measurements": [dict(asdict(m), crop=list(m.crop)) for m in kept]}
    return atomic_write_json(_store(home), data)


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Estimate:
    """The expected cost of a planned training run.

    Attributes:
        seconds_per_iter: of one optimizer step of the run.
        wall_seconds: ``seconds_per_iter x max_iters`` (evaluations not included).
        gpu_hours: wall hours x GPUs (0 for a run on CPUs).
        basis: where the step time comes from, in words.
        warnings: e.g. a measured peak memory above the GPU's.
    """

    seconds_per_iter: float
    wall_seconds: float
    gpu_hours: float
    basis: str
    warnings: tuple[str, ...] = ()


def estimate(*, key: str, max_iters: int | None, grad_accum_steps: int, gpus: int,
             local_device: str | None, measurements: list[Measurement],
             published_seconds_per_iter: float | None,
             published_grad_accum_steps: int = 1) -> Estimate | None:
    """The cost of a run (see the module's docstring); None without any basis or without a
    known number of iterations.

    Args:
        key: :func:`step_key` of the run's recipe.
        max_iters: the run's optimizer steps.
        grad_accum_steps: the run's accumulation; ``published_grad_accum_steps`` the
            published run's (its logged step time covers that many micro-batches).
        gpus: GPUs of the run (0 on CPUs).
        local_device: the device a local job runs on (``cpu`` or ``cuda <name>``); None for
            a Slurm job (the most recent GPU measurement is used).
        measurements: :func:`read_measurements`.
        published_seconds_per_iter: the published log's median step time, if known.
    """
    if not max_iters:
        return None
    mine = [m for m in measurements if m.step_key == key]
    if local_device is not None:
        mine = [m for m in mine if m.device == local_device]
    else:
        mine = [m for m in mine if m.device.startswith("cuda")]
    mine.sort(key=lambda m: m.measured_at)
    warnings: list[str] = []
    if mine:
        m = mine[-1]
        per_iter = m.seconds_per_iter * grad_accum_steps
        basis = (f"measured {m.seconds_per_iter:.3g} s per micro-batch on {m.device} "
                 f"({m.measured_at}, `segctl bench`) x {grad_accum_steps} accumulation")
        if m.gpu_memory_gib is not None and m.peak_memory_gib > m.gpu_memory_gib:
            warnings.append(f"measured peak memory {m.peak_memory_gib:.1f} GiB exceeds the "
                            f"{m.gpu_memory_gib:.0f} GiB of {m.device}: the per-GPU batch "
                            "will not fit")
    elif published_seconds_per_iter is not None:
        per_iter = published_seconds_per_iter * grad_accum_steps / published_grad_accum_steps
        basis = (f"published log: {published_seconds_per_iter:.3g} s/iter on the source's GPUs"
                 + (f", x {grad_accum_steps // max(published_grad_accum_steps, 1)} accumulation"
                    if grad_accum_steps != published_grad_accum_steps else ""))
    else:
        return None
    wall = per_iter * max_iters
    return Estimate(seconds_per_iter=per_iter, wall_seconds=wall,
                    gpu_hours=wall * gpus / 3600.0, basis=basis, warnings=tuple(warnings))


def duration_text(seconds: float) -> str:
    """``3 d 4 h``, ``5 h 12 min``, ``7 min``, ``42 s``."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
