"""Writing a result given as row blocks straight into a .npy file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rqcluster.errors import InputError
from rqcluster.npyfile import save_npy_blocks


@pytest.mark.parametrize("dtype", ["<i8", ">i4", "<f8", "<c16", "|b1"])
def test_row_blocks_written_to_a_file_load_as_the_whole_array(tmp_path: Path,
                                                               dtype: str) -> None:
    whole = (np.arange(7 * 5).reshape(7, 5) % 3).astype(dtype)
    blocks = [whole[0:3], whole[3:3], whole[3:6], whole[6:7]]
    path = save_npy_blocks(tmp_path / "C.npy", whole.dtype, whole.shape, iter(blocks))
    loaded = np.load(path)
    assert loaded.dtype == whole.dtype and loaded.shape == whole.shape
    np.testing.assert_array_equal(loaded, whole)


def test_blocks_of_another_dtype_are_cast_like_an_assignment(tmp_path: Path) -> None:
    blocks = [np.arange(6, dtype=np.int32).reshape(2, 3)]
    path = save_npy_blocks(tmp_path / "C.npy", np.dtype(np.float64), (2, 3), blocks)
    np.testing.assert_array_equal(np.load(path), np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("blocks", [
    [np.zeros((2, 3))],                        # too few rows
    [np.zeros((2, 3)), np.zeros((2, 3))],      # too many rows
    [np.zeros((3, 4))],                        # wrong width
], ids=["short", "long", "wide"])
def test_blocks_that_do_not_fill_the_array_leave_no_file(tmp_path: Path,
                                                          blocks: list[np.ndarray]) -> None:
    with pytest.raises(InputError):
        save_npy_blocks(tmp_path / "C.npy", np.dtype(np.float64), (3, 3), blocks)
    assert list(tmp_path.iterdir()) == []

