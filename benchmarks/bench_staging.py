"""Staging benchmark against a local moto S3 server (started and stopped here, by pid).

Tree: ``--small`` files of ``--small-kb`` KB plus one ``--big-mb`` MB file (uploaded with
s3fs' ``put_file``, so a multipart object whose ETag is verified by parts). Prints, over
``--repeat`` rounds (a plain fsspec recursive ``get`` and a cold stage alternate, so that load
from other processes falls on both alike; each round's figures and the medians):

- cold stage throughput against the plain fsspec recursive ``get`` of the same tree
  (target >= 1.0x);
- warm re-stage time (nothing changed) as a fraction of the cold stage (target <= 2%); a warm
  stage is one listing of the source plus one ``stat`` per file, so the time of one bare
  listing (``find`` with the same filesystem) is printed beside it as its floor;
- parallel (``--workers``) against sequential (1 worker) for the small files alone.

moto reads a whole object for every ranged GET, so segmenting a file into ranged requests
(``--split-mb`` below the file size) costs the server far more here than it would on S3.

Run: ``python -m benchmarks.bench_staging`` (defaults: 200 files of 64 KB + one 200 MB file;
``--quick``: 10 files of 16 KB + one 4 MB file, one round). Each round's figures go to stderr.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.table import Row, row, script_main  # noqa: E402
from segctl.io.copy import stage  # noqa: E402
from segctl.io.source import CHUNK_BYTES, DEFAULT_STREAMS, SPLIT_BYTES  # noqa: E402
from tests.servers import DUMMY_AWS, MotoServer  # noqa: E402

NAME = "staging"
BUCKET = "bench"
MIB = 1024 * 1024


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _arguments(parser) -> None:
    parser.add_argument("--small", type=int, default=None, help="small files (default 200)")
    parser.add_argument("--small-kb", type=int, default=64)
    parser.add_argument("--big-mb", type=int, default=None, help="big file MB (default 200)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--streams", type=int, default=DEFAULT_STREAMS,
                        help="ranged requests in flight per segmented file")
    parser.add_argument("--chunk-mb", type=float, default=CHUNK_BYTES / MIB,
                        help="segment size, MiB")
    parser.add_argument("--split-mb", type=float, default=SPLIT_BYTES / MIB,
                        help="files larger than this (MiB) are fetched in segments")
    parser.add_argument("--repeat", type=int, default=None,
                        help="rounds of fsspec get + cold stage (default 3)")


def rows(quick: bool = False, **options) -> list[Row]:
    """Cold stage against fsspec get, warm re-stage against the cold stage (and a bare
    listing), parallel small files against sequential (seconds)."""
    import argparse

    defaults = dict(small_kb=64, workers=8, streams=DEFAULT_STREAMS, chunk_mb=CHUNK_BYTES / MIB,
                    split_mb=SPLIT_BYTES / MIB)
    args = argparse.Namespace(**{**defaults, **{k: v for k, v in options.items() if v is not None}})
    if quick:
        args.small_kb = 16
    args.small = options.get("small") or (10 if quick else 200)
    args.big_mb = options.get("big_mb") or (4 if quick else 200)
    args.repeat = options.get("repeat") or (1 if quick else 3)
    os.environ.update(DUMMY_AWS)
    work = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    server = MotoServer(work / "moto").start()
    try:
        fs = server.filesystem()
        fs.mkdir(BUCKET)
        small = {f"{BUCKET}/tree/small/f{i:04d}.bin": os.urandom(args.small_kb * 1024)
                 for i in range(args.small)}
        fs.pipe(small)
        big = work / "big.bin"
        with open(big, "wb") as handle:
            for _ in range(args.big_mb):
                handle.write(os.urandom(1024 * 1024))
        fs.put_file(str(big), f"{BUCKET}/tree/big.bin")
        big.unlink()
        total = args.small * args.small_kb * 1024 + args.big_mb * 1024 * 1024
        options = server.storage_options()
        src = f"s3://{BUCKET}/tree"
        knobs = dict(workers=args.workers, storage_options=options, progress=False,
                     streams=args.streams, chunk_bytes=int(args.chunk_mb * MIB),
                     split_bytes=int(args.split_mb * MIB))

        mb = total / 1e6
        print(f"tree: {args.small} x {args.small_kb} KB + 1 x {args.big_mb} MB = {mb:.0f} MB "
              f"(moto S3 on 127.0.0.1); workers {args.workers}, streams {args.streams}, "
              f"segments of {args.chunk_mb:g} MiB above {args.split_mb:g} MiB", file=sys.stderr)
        rounds = []
        for number in range(1, args.repeat + 1):
            baseline_dir, cold_dir = work / "fsspec-get", work / "staged"
            baseline = _timed(lambda: server.filesystem().get(
                f"{BUCKET}/tree/", str(baseline_dir) + "/", recursive=True))
            shutil.rmtree(baseline_dir)
            cold = _timed(lambda: stage(src, cold_dir, **knobs))
            warm = statistics.median(_timed(lambda: stage(src, cold_dir, **knobs))
                                     for _ in range(5))
            shutil.rmtree(cold_dir)
            rounds.append((baseline, cold, warm))
            print(f"round {number}: fsspec get {baseline:5.2f} s, cold stage {cold:5.2f} s "
                  f"({baseline / cold:.2f}x), warm re-stage {1000 * warm:5.1f} ms "
                  f"({100 * warm / cold:.2f}% of cold)", file=sys.stderr)
        baseline, cold, warm = (statistics.median(r[i] for r in rounds) for i in range(3))

        # the floor of a warm stage: one listing of the source, nothing else
        import fsspec

        lister = fsspec.filesystem("s3", **options)
        listing = statistics.median(
            _timed(lambda: lister.find(f"{BUCKET}/tree", detail=True, refresh=True))
            for _ in range(5)
        )

        small_src = f"s3://{BUCKET}/tree/small"
        seq = _timed(lambda: stage(small_src, work / "seq", **{**knobs, "workers": 1}))
        par = _timed(lambda: stage(small_src, work / "par", **knobs))

        notes = f"moto S3 on 127.0.0.1, {mb:.0f} MB tree, median of {len(rounds)} rounds"
        out = [
            row(NAME, "cold stage", cold, "s", "fsspec recursive get of the same tree", baseline,
                target="<= 1.0x (as fast as fsspec get)", passed=cold <= baseline, notes=notes),
            row(NAME, "warm re-stage (nothing changed)", warm, "s", "cold stage", cold,
                target="<= 0.02x", passed=warm <= 0.02 * cold, notes=notes),
            row(NAME, "warm re-stage (nothing changed)", warm, "s",
                "one bare listing of the source (its floor)", listing, notes=notes),
            row(NAME, f"small files, {args.workers} workers", par, "s", "1 worker", seq,
                notes=f"{args.small} x {args.small_kb} KB"),
        ]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    script_main(rows, __doc__, _arguments)
