"""matmul n x n float64, .npy in -> .npy out: from two files on disk to C on disk.

- rqcluster: ``cluster.submit("matmul", a=A.npy, b=B.npy, out=C.npy).result()``.
- numpy: ``np.save(C, np.load(A) @ np.load(B))`` in this process (BLAS threads as set).
- dask: the workers load the files themselves (Dask's advice: "load the data with Dask
  directly", not ``from_array`` of an in-memory array, which ships it inside the graph):
  A as 8 row blocks and B whole, each a delayed ``np.load`` of the memory-mapped file,
  then ``a @ b``, ``.compute()``, ``np.save``. (This relies on a shared filesystem, which
  rqcluster does not assume: its inputs travel through Redis.)
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.core import Context, Runner

NAME = "matmul"
TITLE = "matmul n x n float64, .npy in -> .npy out"
SIZE = "n"


def sizes(quick: bool) -> list[int]:
    return [256, 512] if quick else [1024, 2048, 4096]


def prepare(ctx: Context, n: int) -> Path:
    d = ctx.workdir / f"matmul-{n}"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    np.save(d / "A.npy", rng.random((n, n)))
    np.save(d / "B.npy", rng.random((n, n)))
    return d


def cleanup(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)


def _checksum(path: Path) -> float:
    """A cheap fingerprint of C (sum of a strided sample), compared across systems."""
    c = np.load(path, mmap_mode="r")
    return float(c[:: max(1, len(c) // 16)].sum())


def _load_rows(path: Path, lo: int, hi: int) -> np.ndarray:
    return np.array(np.load(path, mmap_mode="r")[lo:hi])


def same(a: Any, b: Any) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


def runners(ctx: Context) -> dict[str, Runner]:
    out: dict[str, Runner] = {}

    def numpy_run(n: int, d: Path) -> float:
        np.save(d / "C-numpy.npy", np.load(d / "A.npy") @ np.load(d / "B.npy"))
        return _checksum(d / "C-numpy.npy")

    out["numpy"] = numpy_run
    if (rqc := ctx.rqcluster()) is not None:
        def rqcluster_run(n: int, d: Path) -> float:
            rqc.api.submit("matmul", a=d / "A.npy", b=d / "B.npy",
                           out=d / "C-rqcluster.npy").result(timeout=3600)
            return _checksum(d / "C-rqcluster.npy")
        out["rqcluster"] = rqcluster_run
    if (dask := ctx.dask()) is not None:
        def dask_run(n: int, d: Path) -> float:
            import dask.array as da
            from dask import delayed
            step = math.ceil(n / 8)
            a = da.concatenate([
                da.from_delayed(delayed(_load_rows)(d / "A.npy", lo, min(n, lo + step)),
                                shape=(min(n, lo + step) - lo, n), dtype=np.float64)
                for lo in range(0, n, step)])
            b = da.from_delayed(delayed(_load_rows)(d / "B.npy", 0, n), shape=(n, n),
                                dtype=np.float64)
            np.save(d / "C-dask.npy", dask.client.compute(a @ b).result())
            return _checksum(d / "C-dask.npy")
        out["dask"] = dask_run
    return out
