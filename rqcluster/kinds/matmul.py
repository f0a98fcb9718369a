"""``matmul``: C = A @ B, cut into row blocks of A, or 2-D tiles when B is big.

Units are equal row blocks of A (several per slave, counts in proportion to each slave's
performance); B is stored once per job and each slave fetches it once (its inputs cache
keeps it for the job). Integer results are numpy's exactly: each row of C depends only on
the same row of A and all of B.

When B is more than half a slave's memory budget (``memory_budget`` bytes, from the
config's ``memory-budget`` when submitted through the API), B is stored as column panels
of at most half the budget and a unit is one row block times one panel: a tile of C.
Units are numbered panel by panel, so each slave's contiguous run of units needs one or
two panels, one at a time; each row block of the result is its tiles side by side
(``stack_groups``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rqcluster import placement
from rqcluster.config import Options
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

    def defaults(self, options: Options) -> dict[str, Any]:
        return {"memory_budget": options.memory_budget * 2**20}

    def prepare(self, **params: Any) -> Prepared:
        self.check_params(params, ("a", "b"), ("memory_budget",))
        a = as_array(params["a"], "matmul A")
        b = as_array(params["b"], "matmul B")
        for arr, label in ((a, "A"), (b, "B")):
            if arr.ndim != 2:
                raise InputError(f"matmul: {label} must be 2-D, got shape {arr.shape}")
        if a.shape[1] != b.shape[0]:
            raise InputError(f"matmul: shapes {a.shape} and {b.shape} do not align: A has "
                             f"{a.shape[1]} columns but B has {b.shape[0]} rows")
        out_dtype = np.result_type(a.dtype, b.dtype)
        out: dict[str, Any] = {"a_shape": list(a.shape), "b_shape": list(b.shape),
                               "dtype": out_dtype.str}
        budget = params.get("memory_budget")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)
                                   or budget < 1):
            raise InputError(f"matmul: memory_budget must be a whole number of bytes >= 1, "
                             f"got {budget!r}")
        if budget is None or b.nbytes <= budget // 2:
            return Prepared(params=out, inputs={"a": a, "b": b})
        # Panels of B of at most half the budget: the rest is for A's and C's blocks.
        column_bytes = max(1, b.shape[0] * b.dtype.itemsize)
        width = max(1, (budget // 2) // column_bytes)
        panels = [[c, min(c + width, b.shape[1])] for c in range(0, b.shape[1], width)]
        out["panels"] = panels
        inputs: dict[str, Any] = {"a": a}
        for j, (c0, c1) in enumerate(panels):
            inputs[f"b{j}"] = np.ascontiguousarray(b[:, c0:c1])
        return Prepared(params=out, inputs=inputs)

    def split(self, params: Mapping[str, Any], shares: Mapping[str, float],
              units_per_slave: int) -> list[Unit]:
        rows, cols = params["a_shape"]
        # Bytes per row of the larger of A's block and C's block.
        row_bytes = max(1, max(cols, params["b_shape"][1]) * np.dtype(params["dtype"]).itemsize)
        n = placement.unit_count(rows, shares, units_per_slave)
        n = max(n, min(rows, math.ceil(rows * row_bytes / MAX_BLOCK_BYTES)))
        blocks = placement.bounds(rows, n)
        panels = params.get("panels")
        if panels is None:
            owners = placement.deal(n, shares)
            return [Unit(i, owners[i], {"rows": [lo, hi]}) for i, (lo, hi) in enumerate(blocks)]
        owners = placement.deal(n * len(panels), shares)
        return [Unit(j * n + i, owners[j * n + i], {"rows": [lo, hi], "panel": j})
                for j in range(len(panels)) for i, (lo, hi) in enumerate(blocks)]

    def process(self, spec: Mapping[str, Any], params: Mapping[str, Any],
                inputs: Inputs) -> Any:
        lo, hi = spec["rows"]
        block = inputs.array("a", rows=(lo, hi))
        b = inputs.array("b" if "panel" not in spec else f"b{spec['panel']}")
        return np.matmul(block, b)

    def stack_groups(self, params: Mapping[str, Any], units: int) -> list[list[int]]:
        panels = len(params.get("panels") or [None])
        if units % panels:
            raise InputError(f"matmul: {units} units do not tile {panels} panels")
        blocks = units // panels
        return [[j * blocks + i for j in range(panels)] for i in range(blocks)]

    def result_layout(self, params: Mapping[str, Any]) -> tuple[np.dtype[Any], tuple[int, ...]]:
        return np.dtype(params["dtype"]), (params["a_shape"][0], params["b_shape"][1])

    def combine(self, params: Mapping[str, Any], partials: list[Any], inputs: Inputs) -> Any:
        dtype, shape = self.result_layout(params)
        groups = self.stack_groups(params, len(partials))
        return fill_rows(np.empty(shape, dtype=dtype),
                         (np.hstack([partials[u] for u in g]) if len(g) > 1 else partials[g[0]]
                          for g in groups))

    def describe(self, params: Mapping[str, Any]) -> str:
        (m, k), (_, n) = params["a_shape"], params["b_shape"]
        return f"matmul ({m}x{k}) @ ({k}x{n}) {np.dtype(params['dtype'])}"
