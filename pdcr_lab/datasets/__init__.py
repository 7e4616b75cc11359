"""Datasets: embedded ones that need no download, and loaders for the paper's real datasets.

Embedded (``load(name)``): ``"lesions"`` (dermoscopy-like), ``"vessels"`` (fundus-like), both
generated from a seed, and ``"brain"`` (real MRI slices of nilearn's MNI152 template). Real data a
user has: :func:`HAM10000`, :func:`FIVES`, :func:`FolderDataset`, and :func:`read_roi_list` for
the paper's explained RoIs. Every loader returns a :class:`SegmentationData` whose ``.bank`` is a
natural :class:`~pdcr_lab.banks.PatchBank` cut from images that are never explained.
"""

from ._cache import cache_dir
from ._data import SegmentationData
from ._folders import FolderDataset
from ._paper import FIVES, HAM10000
from ._plot import plot_samples
from ._registry import list_datasets, load
from ..rois import RoiSpec, read_roi_list  # re-exported: the loaders take their image ids

__all__ = [
    "FIVES",
    "HAM10000",
    "FolderDataset",
    "RoiSpec",
    "SegmentationData",
    "cache_dir",
    "list_datasets",
    "load",
    "plot_samples",
    "read_roi_list",
]
