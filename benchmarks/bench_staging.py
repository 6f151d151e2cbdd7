"""Staging benchmark against a local moto S3 server (started and stopped here, by pid).

Tree: ``--small`` files of ``--small-kb`` KB plus one ``--big-mb`` MB file. Prints:

- cold stage throughput against a plain fsspec recursive ``get`` of the same tree, measured in
  the same run (target >= 1.0x);
- warm re-stage time (nothing changed) as a fraction of the cold stage (target <= 2%);
- parallel (``--workers``) against sequential (1 worker) for the small files alone.

Run: ``python benchmarks/bench_staging.py`` (defaults: 200 files of 64 KB + one 200 MB file).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segctl.staging import stage  # noqa: E402
from tests.servers import DUMMY_AWS, MotoServer  # noqa: E402

BUCKET = "bench"


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--small-kb", type=int, default=64)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
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

        baseline_dir = work / "fsspec-get"
        baseline = _timed(lambda: server.filesystem().get(f"{BUCKET}/tree/", str(baseline_dir) + "/",
                                                          recursive=True))
        shutil.rmtree(baseline_dir)
        cold_dir = work / "staged"
        cold = _timed(lambda: stage(src, cold_dir, workers=args.workers, storage_options=options,
                                    progress=False))
        warm = _timed(lambda: stage(src, cold_dir, workers=args.workers, storage_options=options,
                                    progress=False))

        small_src = f"s3://{BUCKET}/tree/small"
        seq = _timed(lambda: stage(small_src, work / "seq", workers=1, storage_options=options,
                                   progress=False))
        par = _timed(lambda: stage(small_src, work / "par", workers=args.workers,
                                   storage_options=options, progress=False))

        mb = total / 1e6
        print(f"tree: {args.small} x {args.small_kb} KB + 1 x {args.big_mb} MB = {mb:.0f} MB "
              f"(moto S3 on 127.0.0.1)")
        print(f"fsspec recursive get: {baseline:7.2f} s  {mb / baseline:7.1f} MB/s")
        print(f"segctl cold stage:    {cold:7.2f} s  {mb / cold:7.1f} MB/s  "
              f"({baseline / cold:.2f}x fsspec get; target >= 1.0x)")
        print(f"segctl warm re-stage: {warm:7.3f} s  ({100 * warm / cold:.2f}% of cold; target <= 2%)")
        print(f"small files: sequential {seq:.2f} s, {args.workers} workers {par:.2f} s "
              f"({seq / par:.2f}x)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
