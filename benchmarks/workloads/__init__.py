"""One module per workload of issue 6, in the order they are run."""

from benchmarks.workloads import graph, mapsum, matmul, montecarlo, noop, sleep32, stealing

ALL = {w.NAME: w for w in (matmul, montecarlo, noop, mapsum, sleep32, stealing, graph)}
