"""Run every benchmark and print one table (``make bench``; ``--quick``: tiny sizes, a smoke run).

    python -m benchmarks [--quick] [--only sweep confusion ...] [--threads N] [--json PATH]
                         [--markdown PATH]

Each row is a figure beside a reference measured in the same run, and their ratio; the header
names the machine (CPU model, cores, load, GPU), the torch version and its thread count. The
benchmarks run one after another in this process (each module's ``rows(quick)``); one that
fails gets a line on stderr, the others still run, and the exit status is 1. The thread count
is restored after each (the pipeline benchmark measures one core); ``--quick`` runs everything
on one thread (a smoke run: with two or more threads, a loaded machine that deschedules one of
them stalls every parallel operator, and the quick figures swing tenfold). The GPU suite
(``benchmarks/gpu_suite.py``) is separate: it needs minutes of a GPU.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from benchmarks.table import Row, format_markdown, format_table, machine, to_json

#: Module names under ``benchmarks``, in the order they run and print.
BENCHMARKS = (
    "bench_confusion",
    "bench_msflip_memory",
    "bench_dcnv3",
    "bench_train_step",
    "bench_pipeline",
    "bench_decoders",
    "bench_staging",
    "bench_status",
    "bench_control_plane",
    "bench_sweep",
)


def run(names: list[str], quick: bool) -> tuple[list[Row], list[str], dict[str, float]]:
    """(rows of every benchmark in ``names``, the names that failed, seconds each took)."""
    import torch

    threads = torch.get_num_threads()
    rows: list[Row] = []
    failed: list[str] = []
    seconds: dict[str, float] = {}
    for name in names:
        started = time.perf_counter()
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            rows += module.rows(quick=quick)
        except Exception:  # one broken benchmark must not lose the others' figures
            failed.append(name)
            traceback.print_exc()
        finally:
            torch.set_num_threads(threads)
        seconds[name] = time.perf_counter() - started
        print(f"[{name}] {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    return rows, failed, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and iterations")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="benchmarks to run (bench_ prefix optional): "
                        + ", ".join(n.removeprefix("bench_") for n in BENCHMARKS))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; --quick: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write rows + machine here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write a Markdown table")
    options = parser.parse_args(argv)
    names = list(BENCHMARKS)
    if options.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in options.only}
        unknown = wanted - set(BENCHMARKS)
        if unknown:
            parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
        names = [n for n in BENCHMARKS if n in wanted]
    threads = options.threads or (1 if options.quick else None)
    if threads:  # --quick: one thread keeps a smoke run steady on a shared, loaded machine
        import torch

        torch.set_num_threads(threads)
    info = machine()
    started = time.perf_counter()
    rows, failed, seconds = run(names, options.quick)
    total = time.perf_counter() - started
    print(format_table(rows, info))
    print(f"\n{len(rows)} rows from {len(names) - len(failed)} of {len(names)} benchmarks in "
          f"{total:.0f} s ({'quick' if options.quick else 'full'}: "
          + ", ".join(f"{n.removeprefix('bench_')} {s:.0f} s" for n, s in seconds.items()) + ")")
    if failed:
        print(f"FAILED: {', '.join(failed)} (tracebacks above, on stderr)")
    if options.json:
        options.json.write_text(to_json(rows, info))
    if options.markdown:
        options.markdown.write_text(format_markdown(rows, info) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
