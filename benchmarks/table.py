"""The one table every benchmark reports into: rows, the machine header, and their rendering.

Every figure is printed beside a reference measured in the same run on the same machine, and
their ratio (``figure / reference_figure``), because absolute timings on a shared or loaded
machine say little while ratios of neighbouring measurements stay meaningful. Each benchmark
module has ``rows(quick=False) -> list[Row]`` (``python -m benchmarks`` assembles them) and
still runs alone as a script (``python -m benchmarks.bench_x [--quick] [--json PATH]``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One figure of one benchmark.

    Attributes:
        benchmark: the module's short name (``sweep`` for ``bench_sweep``).
        name: what was measured, e.g. ``submit 64 runs (job array)``.
        figure: the measured value, in ``unit``.
        unit: ``s``, ``ms``, ``GiB``, ``img/s`` ...
        reference: what the figure is compared with, measured in the same run.
        reference_figure: the reference's value, in ``unit``.
        ratio: ``figure / reference_figure`` (NaN when the reference is 0).
        target: the goal in words (``<= 1.1x``, ``<= 3 s``), empty if none.
        notes: how it was measured, what was skipped and why.
        passed: whether the target was met (None: no target, or not judged on this machine).
    """

    benchmark: str
    name: str
    figure: float
    unit: str
    reference: str
    reference_figure: float
    ratio: float
    target: str = ""
    notes: str = ""
    passed: bool | None = None


def row(benchmark: str, name: str, figure: float, unit: str, reference: str,
        reference_figure: float, *, target: str = "", notes: str = "",
        passed: bool | None = None) -> Row:
    """A :class:`Row` with its ratio computed (``figure / reference_figure``)."""
    ratio = figure / reference_figure if reference_figure else math.nan
    return Row(benchmark, name, float(figure), unit, reference, float(reference_figure),
               float(ratio), target, notes, passed)


def median_seconds(fn: Callable[[], object], repeats: int,
                   synchronize: Callable[[], None] | None = None) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` (``synchronize``, e.g.
    ``torch.cuda.synchronize``, is called before and after each so device work is included)."""
    times = []
    for _ in range(max(1, repeats)):
        if synchronize:
            synchronize()
        started = time.perf_counter()
        fn()
        if synchronize:
            synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """What the figures were measured on: CPU model, logical cores (and those this process
    may use), load average, GPU (name, memory GiB) if any, torch version and intra-op threads."""
    import torch

    info: dict[str, object] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": ([round(x, 2) for x in os.getloadavg()]
                         if hasattr(os, "getloadavg") else None),
        "gpu": None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return info


def header(info: dict[str, object]) -> str:
    """The machine as one line for the table's header."""
    load = info.get("load_average")
    return (f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
            f"load {load}; GPU: {info['gpu'] or 'none'}; torch {info['torch']}, "
            f"{info['threads']} threads; python {info['python']}")


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 0.01 <= abs(value) < 10_000:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.3g}"


def format_table(rows: Sequence[Row], info: dict[str, object] | None = None) -> str:
    """The rows as a fixed-width text table (``info``: :func:`machine`, printed first)."""
    head = ("benchmark", "figure", "value", "unit", "reference", "ref value", "ratio",
            "target", "ok", "notes")
    body = [(r.benchmark, r.name, _number(r.figure), r.unit, r.reference,
             _number(r.reference_figure), f"{r.ratio:.2f}x" if math.isfinite(r.ratio) else "-",
             r.target, {True: "yes", False: "NO", None: ""}[r.passed], r.notes) for r in rows]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head) - 1)]
    numeric = {2, 5, 6}

    def render(line) -> str:
        cells = [str(c).rjust(w) if i in numeric else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        return "  ".join([*cells, str(line[-1])]).rstrip()

    lines = [header(info)] if info else []
    lines += [render(head), render(tuple("-" * w for w in widths) + ("-----",))]
    lines += [render(line) for line in body]
    return "\n".join(lines)


def format_markdown(rows: Sequence[Row], info: dict[str, object] | None = None) -> str:
    """The rows as a Markdown table (``info``: :func:`machine`, as a line above it)."""
    lines = [header(info), ""] if info else []
    lines += ["| benchmark | figure | value | unit | reference | ref value | ratio | target | ok "
              "| notes |",
              "|---|---|---:|---|---|---:|---:|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if math.isfinite(r.ratio) else "-"
        ok = {True: "yes", False: "NO", None: ""}[r.passed]
        cells = [r.benchmark, r.name, _number(r.figure), r.unit, r.reference,
                 _number(r.reference_figure), ratio, r.target, ok, r.notes]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def to_json(rows: Sequence[Row], info: dict[str, object] | None = None) -> str:
    """``{"machine": info, "rows": [...]}`` (NaN written as null)."""
    def clean(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return json.dumps({"machine": info,
                       "rows": [{k: clean(v) for k, v in asdict(r).items()} for r in rows]},
                      indent=2)


def script_main(rows_fn: Callable[..., list[Row]], doc: str | None,
                add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The ``__main__`` of a benchmark module: ``[--quick] [--json PATH]`` plus the module's
    own options (``add_arguments``; passed to ``rows_fn`` as keyword arguments); prints the
    machine header and the rows' table."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and iterations (a few seconds): a smoke run")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    if add_arguments:
        add_arguments(parser)
    options = vars(parser.parse_args())
    quick, out = options.pop("quick"), options.pop("json")
    info = machine()
    rows = rows_fn(quick=quick, **options)
    print(format_table(rows, info))
    if out is not None:
        out.write_text(to_json(rows, info))
