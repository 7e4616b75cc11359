"""The reference's RoI coordinate lists: one "image_id row col" per line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..checks import check_int

__all__ = ["RoiSpec", "read_roi_list"]


@dataclass(frozen=True)
class RoiSpec:
    """A square region of interest: top-left corner (row, col) and its height and width, in pixels."""

    image_id: str
    row: int
    col: int
    height: int
    width: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(row, col, height, width)."""
        return (self.row, self.col, self.height, self.width)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index an (..., H, W) array with ``array[..., *roi.slices]``."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


def read_roi_list(path: str | os.PathLike, roi: int = 32) -> list[RoiSpec]:
    """Read a coordinate list such as the reference's ``HAM10000_block_coords_p32_b8.txt``.

    Each non-empty line is ``image_id row col`` (whitespace separated, top-left corner of a
    `roi` x `roi` region in the resized image); lines starting with ``#`` are comments.

    Parameters
    ----------
    path : path
        The text file.
    roi : int
        Side of the square RoI (the paper: 32).

    Returns
    -------
    list of RoiSpec
        In file order; pass ``[r.image_id for r in rois]`` as ``explain_ids`` to a loader.
    """
    roi = check_int("roi", roi, minimum=1)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RoI list {str(path)!r} does not exist")
    specs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields[1:]):
            raise ValueError(
                f"{str(path)!r}, line {number}: expected 'image_id row col' with non-negative integer "
                f"row and col, got {line!r}"
            )
        specs.append(RoiSpec(fields[0], int(fields[1]), int(fields[2]), roi, roi))
    return specs
