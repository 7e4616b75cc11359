"""The one result type returned by every dataset loader, generated or read from disk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..checks import check_choice
from ..banks import PatchBank

__all__ = ["SegmentationData", "bank_block", "bank_block_3d", "build_bank"]

#: Blocks cut from each source image for a dataset's natural bank (the reference cut ~1000 blocks
#: from ~770 images; a few per image keeps the bank varied without making it large).
BANK_PER_IMAGE = 10


def bank_block(height: int, width: int) -> int:
    """Block side for (height, width) images: min side // 12 (8 at 96), lowered until it tiles both.

    Parameters
    ----------
    height, width : int
        Image size in pixels.

    Examples
    --------
    >>> bank_block(96, 96), bank_block(256, 256), bank_block(100, 96)   # 256 // 12 = 21 does not tile
    (8, 16, 4)
    """
    block = max(1, min(height, width) // 12)
    while height % block or width % block:
        block -= 1
    return block


def bank_block_3d(depth: int, height: int, width: int) -> int:
    """Cube side for (depth, height, width) volumes: min side // 8 (4 at 32), lowered until it tiles all three.

    Eight cubes a side give a 512-cell grid: a volume has far more cells than an image at the same
    side, so the cells are relatively coarser than the 2-D rule's 12 a side (144 cells) to keep a
    3-D map's forward passes affordable.

    Parameters
    ----------
    depth, height, width : int
        Volume size in voxels.

    Examples
    --------
    >>> bank_block_3d(32, 32, 32), bank_block_3d(64, 64, 64), bank_block_3d(32, 32, 20)   # 20 // 8 = 2 tiles 32
    (4, 8, 2)
    """
    block = max(1, min(depth, height, width) // 8)
    while depth % block or height % block or width % block:
        block -= 1
    return block


def build_bank(
    images: torch.Tensor | list[torch.Tensor],
    ids: list[str],
    seed: int,
    *,
    block: int | None = None,
    per_image: int = BANK_PER_IMAGE,
    **extra: Any,
) -> PatchBank:
    """The reference recipe (random grid blocks) on held-out images, with the provenance filled in.

    Parameters
    ----------
    images : Tensor (N, C, H, W) or (N, C, D, H, W), or a list of (C, H, W) or (C, D, H, W) tensors
        Held-out images or volumes in [0, 1] (never explained).
    ids : list of str
        Their names, recorded in the provenance.
    seed : int
        Seed of the cut.
    block : int, optional
        Block side; default: :func:`bank_block` of the first image's size, or
        :func:`bank_block_3d` of the first volume's size (cubes).
    per_image : int
        Blocks drawn from each image.
    **extra
        Further provenance entries (``dataset=``, ``split=``, ...).

    Examples
    --------
    >>> bank = build_bank(torch.rand(2, 3, 96, 96), ["a", "b"], seed=0, dataset="demo")
    >>> len(bank), bank.block, bank.provenance["dataset"]
    (20, 8, 'demo')
    """
    if len(ids) == 0:
        raise ValueError("no held-out images to build a patch bank from")
    if block is None:
        shape = [int(n) for n in images[0].shape]
        block = bank_block_3d(*shape[-3:]) if len(shape) == 4 else bank_block(*shape[-2:])
    bank = PatchBank.from_images(images, block=block, per_image=per_image, seed=seed, ids=ids)
    bank.provenance.update(extra)
    return bank


@dataclass(frozen=True, eq=False)
class SegmentationData:
    """Images, masks, ids and metadata of a segmentation dataset, split by split, plus its bank.

    Build it through :func:`pdcr_lab.datasets.load`, :func:`HAM10000`, :func:`FIVES` or
    :func:`FolderDataset`; they all return this type.

    Parameters
    ----------
    name : str
        Dataset name.
    arrays : mapping split -> (images, masks)
        Images as uint8 (N, C, H, W) (stored compactly, returned as float32 in [0, 1]) or float32
        in [0, 1]; masks as bool (N, H, W). Volumes: (N, C, D, H, W) and (N, D, H, W).
    split_ids, split_meta : mapping split -> list
        Per-image names and metadata dicts, in image order.
    info : dict
        Generator or loader description (JSON-serialisable).
    bank_source : PatchBank or callable returning one, optional
        The natural bank, or a function that builds it on first access of :attr:`bank`.

    Examples
    --------
    >>> images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    >>> masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    >>> data = SegmentationData("demo", {"test": (images, masks)}, {"test": ["a", "b", "c"]},
    ...                         {"test": [{}, {}, {}]})
    >>> data
    SegmentationData('demo': test=3, images 1x8x8)
    >>> data.images("test").dtype, data.index("c")
    (torch.float32, ('test', 2))
    """

    name: str
    arrays: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    split_ids: Mapping[str, list[str]]
    split_meta: Mapping[str, list[dict[str, Any]]]
    info: dict[str, Any] = field(default_factory=dict)
    bank_source: PatchBank | Callable[[], PatchBank] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for split, (images, masks) in self.arrays.items():
            n = (len(images), len(masks), len(self.split_ids[split]), len(self.split_meta[split]))
            if len(set(n)) != 1:
                raise ValueError(f"split {split!r} has inconsistent lengths (images, masks, ids, metadata)={n}")

    @property
    def splits(self) -> tuple[str, ...]:
        """Names of the splits present, e.g. ("train", "val", "test")."""
        return tuple(self.arrays)

    def _split(self, split: str) -> str:
        return check_choice("split", split, self.splits)

    def images(self, split: str) -> torch.Tensor:
        """Images of `split`, float32 (N, C, H, W) in [0, 1] ((N, C, D, H, W) for volumes).

        Parameters
        ----------
        split : str
            One of :attr:`splits`.
        """
        images = self.arrays[self._split(split)][0]
        return images.float() / 255.0 if images.dtype == torch.uint8 else images

    def masks(self, split: str) -> torch.Tensor:
        """Masks of `split`, bool (N, H, W) ((N, D, H, W) for volumes).

        Parameters
        ----------
        split : str
            One of :attr:`splits`.
        """
        return self.arrays[self._split(split)][1]

    def ids(self, split: str) -> list[str]:
        """Image names of `split`, in image order.

        Parameters
        ----------
        split : str
            One of :attr:`splits`.
        """
        return list(self.split_ids[self._split(split)])

    def metadata(self, split: str) -> list[dict[str, Any]]:
        """Per-image metadata of `split` (copies; e.g. FIVES disease, brain slice index).

        Parameters
        ----------
        split : str
            One of :attr:`splits`.
        """
        return [dict(m) for m in self.split_meta[self._split(split)]]

    @property
    def bank(self) -> PatchBank:
        """The natural patch bank, cut from images that are never explained (built once, on first use)."""
        source = self.bank_source
        if source is None:
            raise ValueError(
                f"dataset {self.name!r} has no held-out images for a patch bank; "
                "load its train split, or pass explain_ids so that the other images can be used"
            )
        if not isinstance(source, PatchBank):
            source = source()
            object.__setattr__(self, "bank_source", source)
        return source

    def index(self, image_id: str) -> tuple[str, int]:
        """The (split, position) of an image id.

        Parameters
        ----------
        image_id : str
            An image name; a ``KeyError`` when the dataset has none of that name.
        """
        for split, ids in self.split_ids.items():
            if image_id in ids:
                return split, ids.index(image_id)
        raise KeyError(f"image_id={image_id!r} is not in dataset {self.name!r}")

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.split_ids.values())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.split_ids[s])}" for s in self.splits)
        shape = ""
        if self.splits:
            shape = ", images " + "x".join(str(n) for n in self.arrays[self.splits[0]][0].shape[1:])
        return f"SegmentationData({self.name!r}: {sizes}{shape})"


def from_arrays(
    name: str,
    images: np.ndarray,
    masks: np.ndarray,
    ids: list[str],
    meta: list[dict[str, Any]],
    split_sizes: Mapping[str, int],
    info: dict[str, Any],
    seed: int,
) -> SegmentationData:
    """Cut stacked arrays into consecutive splits; the bank comes from the train split."""
    arrays, split_ids, split_meta = {}, {}, {}
    start = 0
    for split, n in split_sizes.items():
        stop = start + n
        arrays[split] = (torch.from_numpy(images[start:stop]), torch.from_numpy(masks[start:stop]))
        split_ids[split] = list(ids[start:stop])
        split_meta[split] = list(meta[start:stop])
        start = stop
    data: SegmentationData

    def bank() -> PatchBank:
        return build_bank(data.images("train"), data.ids("train"), seed, dataset=name, split="train")

    data = SegmentationData(name, arrays, split_ids, split_meta, info, bank if "train" in arrays else None)
    return data
