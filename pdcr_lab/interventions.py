"""Interventions do(X_p := B): what replaces an image block, and how perturbed images are composed.

* ``natural`` (the paper): B is drawn uniformly with replacement from a :class:`PatchBank` of
  blocks cut from other real images of the dataset.
* ``zero`` (the paper's ablation): B = 0.
* ``mean`` *(ours)*: B is the bank's mean colour (the image's mean colour when no bank is given).
* ``blur`` *(ours)*: B is the same block of a Gaussian-blurred copy of the image (sigma = block / 2),
  a "low information" occluder that stays close to the image's own colours.

Only ``natural`` is random; the others give the same B on every draw, so the engine spends one
forward pass per block on them (their mean over draws would be the same number).

Composition is vectorised: for a batch of (block, draw) pairs the perturbed images are built on the
device with one copy of the image per pair and one indexed write of all replacement pixels, without a
Python loop over blocks, in the memory layout the model prefers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .checks import check_choice
from .banks import PatchBank
from .grids import block_sides, block_view, grid_shape

__all__ = ["Intervention", "INTERVENTIONS", "make_intervention", "compose", "draw_table", "block_grid", "check_bank"]

InterventionName = Literal["natural", "zero", "mean", "blur"]
INTERVENTIONS: tuple[str, ...] = ("natural", "zero", "mean", "blur")


def block_grid(image: torch.Tensor, block: int) -> torch.Tensor:
    """(..., C, H, W) -> (..., Gy, Gx, C, b, b) view of the image's blocks (no copy).

    Parameters
    ----------
    image : Tensor of shape (..., C, H, W)
        Any leading dims are kept.
    block : int
        Block side b; it must divide H and W.

    Examples
    --------
    >>> image = torch.arange(16.0).reshape(1, 4, 4)
    >>> grid = block_grid(image, 2)
    >>> tuple(grid.shape)
    (2, 2, 1, 2, 2)
    >>> grid[0, 1, 0]                                  # the top-right block
    tensor([[2., 3.],
            [6., 7.]])
    """
    return block_view(image, (block, block))


def compose(
    image: torch.Tensor,
    cells: torch.Tensor,
    blocks: torch.Tensor,
    block: int | tuple[int, ...],
    *,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Perturbed copies of `image`, copy j with grid cell `cells[j]` replaced by `blocks[j]`.

    Parameters
    ----------
    image : Tensor (C, H, W) or (C, D, H, W)
        The image (or volume) every copy starts from.
    cells : LongTensor (J,)
        Flat block indices (row-major over the grid, depth first for a volume).
    blocks : Tensor (J, C, *b) or (1, C, *b)
        Replacement content (broadcast when one block is given).
    block : int or tuple of int
        Block side b (a volume may give one side per axis).
    memory_format : torch.memory_format
        Layout of the returned batch (``torch.channels_last`` feeds channels-last models without a
        second copy).

    The batch is one copy of the image per job plus one indexed write of all replacement pixels,
    so the cost does not depend on where the blocks are and works for any memory layout.

    Examples
    --------
    >>> image = torch.ones(1, 4, 4)
    >>> batch = compose(image, torch.tensor([0, 3]), torch.zeros(1, 1, 2, 2), 2)
    >>> batch[:, 0]
    tensor([[[0., 0., 1., 1.],
             [0., 0., 1., 1.],
             [1., 1., 1., 1.],
             [1., 1., 1., 1.]],
    <BLANKLINE>
            [[1., 1., 1., 1.],
             [1., 1., 1., 1.],
             [1., 1., 0., 0.],
             [1., 1., 0., 0.]]])
    >>> volume = compose(torch.ones(1, 4, 4, 4), torch.tensor([7]), torch.zeros(1, 1, 2, 2, 2), 2)
    >>> int((volume == 0).sum()), bool((volume[0, 0, 2:, 2:, 2:] == 0).all())
    (8, True)
    """
    c, *spatial = image.shape
    sides = block_sides(block, len(spatial))
    grid = grid_shape(spatial, sides)
    n = cells.shape[0]
    out = image.unsqueeze(0).expand(n, *image.shape).clone(memory_format=memory_format)
    k = len(sides)
    # one index tensor per axis, shaped to broadcast to (J, C, *b): batch, channel, then each spatial axis
    index: list[torch.Tensor] = [torch.arange(n, device=image.device).reshape(n, *([1] * (k + 1))),
                                 torch.arange(c, device=image.device).reshape(1, c, *([1] * k))]
    rest = cells
    starts = []
    for g in reversed(grid):
        starts.append(rest % g)
        rest = rest // g
    for axis, (side, start) in enumerate(zip(sides, reversed(starts))):
        shape = [n, 1] + [1] * k
        shape[2 + axis] = side
        index.append(((start * side)[:, None] + torch.arange(side, device=image.device)).reshape(shape))
    out[tuple(index)] = blocks.to(image.dtype).expand(n, c, *sides)
    return out


def draw_table(seed: int, n_cells: int, n_draws: int, n_bank: int, *, prefix: int | None = None) -> np.ndarray:
    """Bank indices for every (cell, draw): shape (n_cells, n_draws), fixed by the seed.

    Drawing the whole table up front makes the estimate independent of the batch size, of which
    blocks survive the screening and of the order in which batches run.

    With `prefix`, the first `prefix` columns are exactly ``draw_table(seed, n_cells, prefix, n_bank)``
    and the further columns come from a second stream of the same seed: a longer table (adaptive
    sampling) starts with the paper-mode draws.

    Parameters
    ----------
    seed : int
        Seed of the table.
    n_cells : int
        Number of grid cells (rows of the table).
    n_draws : int
        Draws per cell (columns); the paper's S + N.
    n_bank : int
        Size of the bank the indices point into (uniform draws, with replacement).
    prefix : int, optional
        Number of leading columns that must equal a table of that many draws.

    Examples
    --------
    >>> table = draw_table(0, n_cells=3, n_draws=5, n_bank=10, prefix=2)
    >>> table.shape
    (3, 5)
    >>> bool((table[:, :2] == draw_table(0, 3, 2, 10)).all())
    True
    """
    rng = np.random.default_rng(seed)
    if prefix is None or prefix >= n_draws:
        return rng.integers(0, n_bank, size=(n_cells, n_draws), dtype=np.int64)
    head = rng.integers(0, n_bank, size=(n_cells, prefix), dtype=np.int64)
    tail = np.random.default_rng([seed, 1]).integers(0, n_bank, size=(n_cells, n_draws - prefix), dtype=np.int64)
    return np.concatenate([head, tail], axis=1)


@dataclass
class Intervention:
    """A prepared intervention for one image: produces the replacement of (cell, draw) pairs.

    Built by :func:`make_intervention`.

    Parameters
    ----------
    name : {"natural", "zero", "mean", "blur"}
        The intervention.
    stochastic : bool
        True when draws differ (``natural``); False when every draw is the same block.
    block : int or tuple of int
        Block side b (or sides, for a volume's cuboid blocks).
    """

    name: str
    stochastic: bool
    block: int | tuple[int, ...]
    _source: torch.Tensor  # natural: bank blocks (N,C,*b); blur: blurred blocks (cells,C,*b); else (1,C,*b)
    _table: torch.Tensor | None = None  # natural: (cells, draws) bank indices

    def replacements(self, cells: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Replacement blocks for the pairs (cells[j], draws[j]), shape (J, C, *b) or (1, C, *b).

        Parameters
        ----------
        cells : LongTensor (J,)
            Flat block indices.
        draws : LongTensor (J,)
            Draw numbers (columns of the draw table); ignored by deterministic interventions.
        """
        if self.name == "natural":
            return self._source[self._table[cells, draws]]
        if self.name == "blur":
            return self._source[cells]
        return self._source

    def to(self, device: torch.device) -> Intervention:
        """A copy whose replacement blocks and draw table live on `device`.

        Parameters
        ----------
        device : torch.device
            Where the perturbed images are composed.
        """
        table = None if self._table is None else self._table.to(device)
        return Intervention(self.name, self.stochastic, self.block, self._source.to(device), table)


def _gaussian_blur(image: torch.Tensor, sigma: float | tuple[float, ...]) -> torch.Tensor:
    """Separable Gaussian blur of a (C, *S) image or volume, reflect-padded, one sigma per axis."""
    k = image.dim() - 1
    sigmas = (float(sigma),) * k if np.ndim(sigma) == 0 else tuple(float(v) for v in sigma)  # type: ignore[arg-type]
    conv = {2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[k]
    c = image.shape[0]
    out = image.unsqueeze(0)
    for axis, sig in enumerate(sigmas):
        radius = max(1, int(round(3 * sig)))
        radius = min(radius, image.shape[1 + axis] - 1)  # reflect padding must be shorter than the axis
        if radius < 1:
            continue
        x = torch.arange(-radius, radius + 1, dtype=image.dtype)
        kernel = torch.exp(-(x**2) / (2 * sig**2))
        shape = [1] * k
        shape[axis] = -1
        weight = (kernel / kernel.sum()).reshape(1, 1, *shape).repeat(c, 1, *([1] * k))
        pad = [0, 0] * k
        pad[2 * (k - 1 - axis)] = pad[2 * (k - 1 - axis) + 1] = radius  # F.pad lists the last axis first
        out = conv(torch.nn.functional.pad(out, pad, mode="reflect"), weight, groups=c)
    return out[0]


def make_intervention(
    name: str,
    image: torch.Tensor,
    block: int,
    *,
    bank: PatchBank | None,
    seed: int,
    n_draws: int,
    prefix: int | None = None,
) -> Intervention:
    """Prepare intervention `name` for `image` (checks the bank against the image).

    Parameters
    ----------
    name : {"natural", "zero", "mean", "blur"}
        The intervention (module notes).
    image : Tensor (C, H, W) or (C, D, H, W)
        The explained image or volume (``blur`` blurs it; ``mean`` uses its colour without a bank).
    block : int or tuple of int
        Block side b (a volume may give one side per axis).
    bank : PatchBank, optional
        Natural blocks; required by ``natural``, the mean colour of ``mean``.
    seed : int
        Seed of the natural draw table.
    n_draws : int
        Columns of natural draws per cell.
    prefix : int, optional
        Keep the first columns equal to a table of that many draws (see :func:`draw_table`).

    Examples
    --------
    >>> image = torch.rand(1, 8, 8)
    >>> zero = make_intervention("zero", image, 4, bank=None, seed=0, n_draws=1)
    >>> zero.stochastic, tuple(zero.replacements(torch.tensor([0, 1]), torch.tensor([0, 0])).shape)
    (False, (1, 1, 4, 4))
    >>> bank = pdcr_lab.PatchBank(torch.rand(6, 1, 4, 4))
    >>> natural = make_intervention("natural", image, 4, bank=bank, seed=0, n_draws=3)
    >>> natural.stochastic, tuple(natural.replacements(torch.tensor([0, 1]), torch.tensor([2, 0])).shape)
    (True, (2, 1, 4, 4))
    """
    check_choice("intervention", name, INTERVENTIONS)
    c, *spatial = image.shape
    sides = block_sides(block, len(spatial))
    n_cells = int(np.prod(grid_shape(spatial, sides)))
    if bank is not None:
        if not isinstance(bank, PatchBank):
            raise TypeError(f"bank must be a pdcr_lab.PatchBank, got {type(bank).__name__}")
        check_bank(bank, sides, c)
    if name == "natural":
        if bank is None:
            raise ValueError("intervention='natural' needs bank=PatchBank(...) of natural blocks (see PatchBank.from_images)")
        table = torch.from_numpy(draw_table(seed, n_cells, n_draws, len(bank), prefix=prefix))
        return Intervention(name, True, block, bank.blocks, table)
    if name == "zero":
        source = torch.zeros(1, c, *sides)
    elif name == "mean":
        colour = bank.mean() if bank is not None else image.mean(dim=tuple(range(1, image.dim())))
        source = colour.reshape(1, c, *([1] * len(sides))).expand(1, c, *sides).clone()
    else:  # blur
        blurred = _gaussian_blur(image.float().cpu(), sigma=tuple(b / 2 for b in sides))
        source = block_view(blurred, sides).reshape(n_cells, c, *sides).contiguous()
    return Intervention(name, False, block, source)


def check_bank(bank: PatchBank, sides: tuple[int, ...], channels: int) -> None:
    """Refuse a bank whose blocks do not fit the grid: wrong shape, wrong rank (2-D bank for a volume) or channels.

    Parameters
    ----------
    bank : PatchBank
        Natural blocks.
    sides : tuple of int
        The grid's block sides (2 for an image, 3 for a volume).
    channels : int
        The image's channels.
    """
    shown = str(sides[0]) if len(set(sides)) == 1 else "x".join(map(str, sides))
    if bank.ndim != len(sides):
        kind = {2: "2-D blocks (cut from images)", 3: "3-D blocks (cut from volumes)"}[bank.ndim]
        need = "cubes cut from volumes (PatchBank.from_images on (N, C, D, H, W))" if len(sides) == 3 else \
            "square blocks cut from images"
        raise ValueError(f"bank holds {kind} of {bank.shape_text} but the {len(sides)}-D grid needs {shown} {need}")
    if bank.block_shape != sides:
        raise ValueError(f"bank holds {bank.shape_text} blocks but block={shown}; build the bank with block={shown}")
    if bank.channels != channels:
        raise ValueError(f"bank blocks have {bank.channels} channels but the image has {channels}")
