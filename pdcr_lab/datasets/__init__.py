"""Datasets: embedded ones that need no download, and loaders for the paper's real datasets.

Embedded (``load(name)``): ``"lesions"`` (dermoscopy-like), ``"vessels"`` (fundus-like), both
generated from a seed, ``"brain"`` (real MRI slices of nilearn's MNI152 template) and the
cue-controlled ``"cues"``, ``"cues_global"``, ``"cues_sequential"`` (their cues can be removed or
contradicted per image: :mod:`pdcr_lab.datasets.cues`, with ``ablate``, ``cue_reliance`` and one
oracle per cue); volumes:
``"brain3d"`` (cubes of the same template) and ``"vessels3d"`` (generated vessel trees). Real data a
user has: :func:`HAM10000`, :func:`FIVES`, :func:`FolderDataset` (PNG/TIFF/JPEG, 8- or 16-bit,
normalisation, label masks, tiling), and :func:`read_roi_list` for the paper's explained RoIs. Every
loader returns a :class:`SegmentationData` whose ``.bank`` is a natural
:class:`~pdcr_lab.banks.PatchBank` cut from images that are never explained. For a command line:
:func:`read_pair` reads one image (and mask) to explain, :func:`bank_from_folder` cuts a bank from a
folder of other images.
"""

from . import _cues as cues
from ._cache import cache_dir
from ._data import SegmentationData
from ._example import example_folder
from ._folders import FolderDataset, list_files
from ._io import IMAGE_EXTENSIONS, Normalize, read_image, read_mask
from ._own import OwnImage, bank_from_folder, read_pair
from ._paper import FIVES, HAM10000
from ._plot import plot_samples
from ._registry import list_datasets, load
from ..rois import RoiSpec, read_roi_list  # re-exported: the loaders take their image ids

__all__ = [
    "FIVES",
    "HAM10000",
    "FolderDataset",
    "IMAGE_EXTENSIONS",
    "list_files",
    "Normalize",
    "OwnImage",
    "RoiSpec",
    "SegmentationData",
    "bank_from_folder",
    "cache_dir",
    "cues",
    "example_folder",
    "list_datasets",
    "load",
    "plot_samples",
    "read_image",
    "read_mask",
    "read_pair",
    "read_roi_list",
]
