"""rqcluster's benchmark suite: every workload of issue 6 run side by side on rqcluster, numpy
and the peers (Dask distributed, plain RQ, Celery), alternating within each repetition.

Run it with ``python -m benchmarks`` (``--help`` for options); see benchmarks/README.md.
Peers come from the optional ``bench`` extra and are skipped, with a note, when missing.
"""
