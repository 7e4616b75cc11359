"""Natural-distribution patch banks: the blocks that PdCR's "natural" intervention draws from.

A bank holds b x b blocks cut from real images of the same dataset that are *not* being explained
(docs/method.md section 2). Blocks are float32 in [0, 1], channels first, exactly like the images the
engine receives; any model-specific normalisation happens inside the model adapter, never here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path
from .checks import as_tensor, check_int, describe
from .grids import block_sides, block_view, grid_shape

__all__ = ["PatchBank"]

_REFERENCE_NAME = re.compile(r"^(?P<source>.+)_(?P<row>\d+)_(?P<col>\d+)$")


@dataclass(frozen=True, eq=False)
class PatchBank:
    """A bank of natural b x b blocks (or b x b x b cubes, for volumes).

    Parameters
    ----------
    blocks : Tensor of shape (N, C, b, b), or (N, C, bz, by, bx) for volumes
        float32 pixel values in [0, 1].
    provenance : dict
        Where the blocks come from (recipe, seed, source image ids, ...). JSON-serialisable; it is
        written into every result that uses the bank.

    Examples
    --------
    >>> bank = PatchBank(torch.rand(5, 3, 8, 8), {"recipe": "random"})
    >>> bank
    PatchBank(5 blocks of 3x8x8, recipe='random')
    >>> len(bank), bank.block, bank.channels, tuple(bank.mean().shape)
    (5, 8, 3, (3,))
    >>> PatchBank(torch.rand(2, 1, 4, 4, 4)).block_shape
    (4, 4, 4)
    """

    blocks: torch.Tensor
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        blocks = as_tensor("blocks", self.blocks)
        if blocks.ndim not in (4, 5) or (blocks.ndim == 4 and blocks.shape[-1] != blocks.shape[-2]):
            raise ValueError(f"blocks must have shape (N, C, b, b) (images) or (N, C, bz, by, bx) (volumes), "
                             f"got {describe(self.blocks)}")
        if blocks.shape[0] == 0:
            raise ValueError("blocks is empty: a PatchBank needs at least one block")
        if not torch.isfinite(blocks).all():
            raise ValueError("blocks contain NaN or Inf values")
        object.__setattr__(self, "blocks", blocks.contiguous())
        object.__setattr__(self, "provenance", dict(self.provenance))

    # -- basic properties -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    @property
    def block(self) -> int:
        """Side length b of the blocks, in pixels (the x side of a volume's cuboid blocks)."""
        return int(self.blocks.shape[-1])

    @property
    def ndim(self) -> int:
        """Spatial axes of the blocks: 2 (cut from images) or 3 (cut from volumes)."""
        return int(self.blocks.dim() - 2)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """The blocks' side along each spatial axis."""
        return tuple(int(s) for s in self.blocks.shape[2:])

    @property
    def shape_text(self) -> str:
        """The blocks' sides as text, e.g. ``8x8`` or ``4x4x4``."""
        return "x".join(map(str, self.block_shape))

    @property
    def channels(self) -> int:
        return int(self.blocks.shape[1])

    @property
    def id(self) -> str:
        """A short content hash, recorded in results so that a bank can be matched to its maps."""
        import hashlib

        digest = hashlib.sha1(self.blocks.numpy().tobytes()).hexdigest()
        return digest[:12]

    def mean(self) -> torch.Tensor:
        """Per-channel mean colour of the bank, shape (C,)."""
        return self.blocks.mean(dim=(0, *range(2, self.blocks.dim())))

    def __repr__(self) -> str:
        recipe = self.provenance.get("recipe", "custom")
        return f"PatchBank({len(self)} blocks of {self.channels}x{self.shape_text}, recipe={recipe!r})"

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_images(
        cls,
        images: Sequence[Any] | np.ndarray | torch.Tensor,
        block: int | tuple[int, ...] = 8,
        per_image: int = 100,
        seed: int = 0,
        *,
        ids: Sequence[str] | None = None,
    ) -> PatchBank:
        """Cut random grid-aligned blocks from images (the reference recipe).

        For every image, `per_image` distinct cells of its b x b grid are drawn without replacement
        (all cells if the grid is smaller). Pass only images that will not be explained. Volumes
        ((C, D, H, W) each) give a bank of cubes for the 3-D engine.

        Parameters
        ----------
        images : sequence of (C, H, W) arrays or an (N, C, H, W) array, values in [0, 1]; or volumes (C, D, H, W) / (N, C, D, H, W)
        block : int or tuple of int
            Block side b; must divide every spatial side (volumes may give one side per axis).
        per_image : int
            Blocks drawn from each image (the reference: 100).
        seed : int
            Seed of the draw, recorded in the provenance.
        ids : sequence of str, optional
            Names of the source images, recorded in the provenance.

        Examples
        --------
        >>> images = torch.rand(2, 1, 16, 16)            # two 2 x 2 grids of 8 x 8 blocks
        >>> bank = PatchBank.from_images(images, block=8, per_image=3, seed=0)
        >>> len(bank), bank.provenance["sources"]
        (6, ['image_0', 'image_1'])
        >>> PatchBank.from_images(torch.rand(1, 1, 8, 8, 8), block=4, per_image=2).block_shape
        (4, 4, 4)
        """
        per_image = check_int("per_image", per_image, minimum=1)
        seed = check_int("seed", seed, minimum=0)
        if isinstance(images, (np.ndarray, torch.Tensor)) and np.ndim(images) in (4, 5):
            images = list(images)
        images = list(images)
        if not images:
            raise ValueError("images is empty: a PatchBank needs at least one source image")
        if ids is not None and len(ids) != len(images):
            raise ValueError(f"ids has {len(ids)} names for {len(images)} images")
        rng = np.random.default_rng(seed)
        first = as_tensor("images[0]", images[0])
        if first.ndim not in (3, 4):
            raise ValueError(f"images[0] must have shape (C, H, W) or, for volumes, (C, D, H, W), got {describe(first)}")
        sides = block_sides(block, first.ndim - 1)
        cut: list[torch.Tensor] = []
        origin: list[tuple[int, ...]] = []
        for i, image in enumerate(images):
            image = as_tensor(f"images[{i}]", image)
            if image.ndim != first.ndim:
                raise ValueError(f"images[{i}] has shape {tuple(image.shape)} but images[0] has {tuple(first.shape)}; "
                                 "a bank is cut from images only or from volumes only")
            if image.shape[0] != first.shape[0]:
                raise ValueError(f"images[{i}] has {image.shape[0]} channels, images[0] has {first.shape[0]}")
            spatial = tuple(image.shape[1:])
            if any(s % b for s, b in zip(spatial, sides)):
                raise ValueError(f"block={block} does not tile images[{i}] of size {'x'.join(map(str, spatial))}")
            grid = grid_shape(spatial, sides)
            n_cells = int(np.prod(grid))
            cells = rng.choice(n_cells, size=min(per_image, n_cells), replace=False)
            blocks = block_view(image, sides)
            for cell in cells:
                where = tuple(int(v) for v in np.unravel_index(int(cell), grid))
                cut.append(blocks[where])
                origin.append((i, *where))
        provenance = {
            "recipe": "random grid blocks (reference)",
            "seed": seed,
            "per_image": per_image,
            "block": sides[0] if len(set(sides)) == 1 else list(sides),
            "n_images": len(images),
            "sources": list(ids) if ids is not None else [f"image_{i}" for i in range(len(images))],
        }
        bank = cls(torch.stack(cut), provenance)
        object.__setattr__(bank, "_origin", np.asarray(origin, dtype=np.int32))
        return bank

    @classmethod
    def from_folder(cls, path: str | os.PathLike, pattern: str = "*.png") -> PatchBank:
        """Read a folder of block images, such as the reference's ``intervention_patches``.

        Files are read in sorted name order; names ``<image id>_<row>_<col>.png`` (the reference's)
        are parsed into the provenance. All blocks must share one size, channel count and bit depth
        (8-bit values are divided by 255, 16-bit ones by 65535).

        Parameters
        ----------
        path : str or os.PathLike
            The folder.
        pattern : str
            Glob pattern of the block files inside it.

        Examples
        --------
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     for name in ("ISIC_1_0_8.png", "ISIC_2_16_0.png"):
        ...         Image.new("RGB", (8, 8), (255, 0, 0)).save(f"{folder}/{name}")
        ...     bank = PatchBank.from_folder(folder)
        >>> len(bank), bank.provenance["n_images"], float(bank.blocks[0, 0, 0, 0])
        (2, 2, 1.0)
        """
        from PIL import Image

        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"path={str(folder)!r} is not a folder of block images")
        files = sorted(folder.glob(pattern))
        if not files:
            raise ValueError(f"path={str(folder)!r} holds no files matching {pattern!r}")
        blocks = []
        sources = []
        for f in files:
            try:
                with Image.open(f) as im:
                    array = np.asarray(im.convert("RGB") if im.mode in ("P", "RGBA", "CMYK") else im)
                    if im.mode == "I" and im.format == "PNG":  # Pillow opens some 16-bit PNGs as 32-bit
                        array = array.astype(np.uint16)
            except Exception as exc:
                raise ValueError(f"cannot read block image {str(f)!r}: {exc}") from exc
            if array.ndim == 2:
                array = array[..., None]
            if blocks and array.shape != blocks[0].shape:
                raise ValueError(
                    f"block image {str(f)!r} has shape {array.shape}, the first block has {blocks[0].shape}"
                )
            blocks.append(array)
            match = _REFERENCE_NAME.match(f.stem)
            sources.append(match.group("source") if match else f.stem)
        dtypes = {b.dtype for b in blocks}
        if len(dtypes) > 1 or not dtypes <= {np.dtype(np.uint8), np.dtype(np.uint16)}:
            # dividing 16-bit or float blocks by 255 would give plausible-looking but wrong values
            raise ValueError(f"block images in {str(folder)!r} hold {sorted(map(str, dtypes))} values; expected "
                             "8-bit or 16-bit images of one kind")
        stacked = np.stack(blocks).astype(np.float32) / float(np.iinfo(blocks[0].dtype).max)
        tensor = torch.from_numpy(stacked).permute(0, 3, 1, 2)
        provenance = {
            "recipe": "folder",
            "path": folder.name,
            "n_files": len(files),
            "n_images": len(set(sources)),
            "block": int(tensor.shape[-1]),
        }
        return cls(tensor, provenance)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank to a compressed ``.npz`` file (atomically).

        Parameters
        ----------
        path : str or os.PathLike
            Destination file; its folder is created when missing.

        Examples
        --------
        >>> import tempfile
        >>> bank = PatchBank(torch.zeros(2, 1, 4, 4), {"recipe": "zeros"})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     again = PatchBank.load(bank.save(f"{folder}/bank.npz"))
        >>> again.id == bank.id, again.provenance
        (True, {'recipe': 'zeros'})
        """
        path = Path(path)
        with atomic_path(path) as staged, open(staged, "wb") as fh:
            np.savez_compressed(fh, blocks=self.blocks.numpy(), provenance=np.asarray(json.dumps(self.provenance)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PatchBank:
        """Read a bank written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            A ``.npz`` file written by :meth:`save`.
        """
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(torch.from_numpy(data["blocks"]), json.loads(str(data["provenance"])))
