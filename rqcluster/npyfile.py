"""Reading and writing .npy files on the submitter's disk, with errors a user can act on."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rqcluster.codec import check_numeric_dtype
from rqcluster.errors import InputError


def load_npy(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """Memory-map a .npy file (no copy until it is sent); InputError naming ``what``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what}: file not found: {p}")
    if p.is_dir():
        raise InputError(f"{what}: {p} is a directory, not a .npy file")
    dtype = _header_dtype(p, what)
    check_numeric_dtype(dtype, f"{what} ({p})")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{what}: cannot read {p}: {e}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive loads as a mapping
        raise InputError(f"{what}: {p} is an .npz archive; give one .npy array")
    check_numeric_dtype(arr.dtype, f"{what} ({p})")
    return arr


def _header_dtype(p: Path, what: str) -> np.dtype[Any]:
    """The dtype a .npy file declares, read from its header alone (no data, no pickle)."""
    try:
        with p.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{what}: {p} is not a .npy file ({e})") from None
    return dtype


def as_array(value: Any, what: str) -> np.ndarray:
    """A path or an array-like given by the user, as a numeric ndarray."""
    if isinstance(value, str | os.PathLike):
        return load_npy(value, what)
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise InputError(f"{what}: not an array or .npy path: {e}") from None
    check_numeric_dtype(arr.dtype, what)
    return arr


def check_output(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse an output path that is not a .npy file in an existing directory."""
    p = Path(path)
    if p.suffix != ".npy":
        raise InputError(f"{what}: {p} must end in .npy")
    if not p.parent.exists():
        raise InputError(f"{what}: directory {p.parent} does not exist")
    return p


def fill_rows(out: np.ndarray, blocks: Iterable[np.ndarray]) -> np.ndarray:
    """Copy consecutive row blocks into ``out`` (an array or a memmap); InputError unless
    they fill it exactly."""
    row = 0
    for block in blocks:
        out[row:row + len(block)] = block
        row += len(block)
    if row != (out.shape[0] if out.ndim else 0):
        raise InputError(f"row blocks hold {row} rows, expected {out.shape[0]}")
    return out


def save_npy_blocks(path: str | os.PathLike[str], dtype: np.dtype[Any], shape: tuple[int, ...],
                    blocks: Iterable[np.ndarray]) -> Path:
    """Write an array given as consecutive row blocks straight into a .npy file, so the
    whole array is never in memory; atomic like ``save_npy``.

    Blocks are appended with plain writes, not through a memory map: the dirty pages of a
    mapped output would count in this process's memory until the kernel writes them."""
    p = check_output(path)
    dtype = np.dtype(dtype)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                      "shape": tuple(shape)}
            # Numeric dtypes and at most 64 dimensions: always fits format 1.0's header.
            np.lib.format.write_array_header_1_0(f, header)
            row = 0
            for block in blocks:
                if block.shape[1:] != tuple(shape[1:]) or row + len(block) > shape[0]:
                    raise InputError(f"a row block of shape {block.shape} does not fit an "
                                     f"array of shape {tuple(shape)} at row {row}")
                f.write(np.ascontiguousarray(block, dtype=dtype).data)
                row += len(block)
            if row != shape[0]:
                raise InputError(f"row blocks hold {row} rows, expected {shape[0]}")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def save_npy(path: str | os.PathLike[str], arr: np.ndarray) -> Path:
    """Write ``arr`` to ``path`` atomically (temp file + rename): never a half-written file."""
    p = check_output(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
