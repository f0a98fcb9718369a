"""``matmul``: C = A @ B, cut into row blocks of A.

Units are equal row blocks of A (several per slave, counts in proportion to each slave's
performance); B is stored once per job and each slave fetches it once (its inputs cache
keeps it for the job). Integer results are numpy's exactly: each row of C depends only on
the same row of A and all of B.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rqcluster import placement
from rqcluster.errors import InputError
from rqcluster.kinds.base import Inputs, Kind, Prepared, Unit
from rqcluster.npyfile import as_array, fill_rows

# A unit's blocks of A and of C stay under this many bytes, whatever the cluster size, so
# one unit never needs more memory than a slave can spare and a partial stays well below
# Redis's 512 MB value limit. A slave holds B plus a few copies of one block (A's rows,
# C's rows, the encoded partial, the packed command), so small blocks keep its peak near
# B's size: 8192² float64 (B is 512 MiB) measured a slave peak of 1.42x B with 32 MiB blocks.
MAX_BLOCK_BYTES = 32 * 1024 * 1024


class MatmulKind(Kind):
    name = "matmul"
    help = "C = A @ B for two 2-D numeric arrays, split into row blocks of A"
    stacked = True

    def prepare(self, **params: Any) -> Prepared:
        self.check_params(params, ("a", "b"))
        a = as_array(params["a"], "matmul A")
        b = as_array(params["b"], "matmul B")
        for arr, label in ((a, "A"), (b, "B")):
            if arr.ndim != 2:
                raise InputError(f"matmul: {label} must be 2-D, got shape {arr.shape}")
        if a.shape[1] != b.shape[0]:
            raise InputError(f"matmul: shapes {a.shape} and {b.shape} do not align: A has "
                             f"{a.shape[1]} columns but B has {b.shape[0]} rows")
        out_dtype = np.result_type(a.dtype, b.dtype)
        return Prepared(
            params={"a_shape": list(a.shape), "b_shape": list(b.shape),
                    "dtype": out_dtype.str},
            inputs={"a": a, "b": b},
        )

    def split(self, params: Mapping[str, Any], shares: Mapping[str, float],
              units_per_slave: int) -> list[Unit]:
        rows, cols = params["a_shape"]
        # Bytes per row of the larger of A's block and C's block.
        row_bytes = max(1, max(cols, params["b_shape"][1]) * np.dtype(params["dtype"]).itemsize)
        n = placement.unit_count(rows, shares, units_per_slave)
        n = max(n, min(rows, math.ceil(rows * row_bytes / MAX_BLOCK_BYTES)))
        owners = placement.deal(n, shares)
        return [Unit(i, owners[i], {"rows": [lo, hi]})
                for i, (lo, hi) in enumerate(placement.bounds(rows, n))]

    def process(self, spec: Mapping[str, Any], params: Mapping[str, Any],
                inputs: Inputs) -> Any:
        lo, hi = spec["rows"]
        block = inputs.array("a", rows=(lo, hi))
        b = inputs.array("b")
        return np.matmul(block, b)

    def result_layout(self, params: Mapping[str, Any]) -> tuple[np.dtype[Any], tuple[int, ...]]:
        return np.dtype(params["dtype"]), (params["a_shape"][0], params["b_shape"][1])

    def combine(self, params: Mapping[str, Any], partials: list[Any], inputs: Inputs) -> Any:
        dtype, shape = self.result_layout(params)
        return fill_rows(np.empty(shape, dtype=dtype), partials)

    def describe(self, params: Mapping[str, Any]) -> str:
        (m, k), (_, n) = params["a_shape"], params["b_shape"]
        return f"matmul ({m}x{k}) @ ({k}x{n}) {np.dtype(params['dtype'])}"
