"""segctl's benchmarks: ``python -m benchmarks [--quick]`` (or ``make bench``) runs them all and
prints one table (:mod:`benchmarks.table`); each ``bench_*.py`` also runs alone."""
