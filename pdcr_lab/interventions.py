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

__all__ = ["Intervention", "INTERVENTIONS", "make_intervention", "compose", "draw_table", "block_grid"]

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
    *lead, c, h, w = image.shape
    gy, gx = h // block, w // block
    view = image.reshape(*lead, c, gy, block, gx, block)
    n = len(lead)
    order = [*range(n), n + 1, n + 3, n, n + 2, n + 4]
    return view.permute(order)


def compose(
    image: torch.Tensor,
    cells: torch.Tensor,
    blocks: torch.Tensor,
    block: int,
    *,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Perturbed copies of `image`, copy j with grid cell `cells[j]` replaced by `blocks[j]`.

    Parameters
    ----------
    image : Tensor (C, H, W)
        The image every copy starts from.
    cells : LongTensor (J,)
        Flat block indices (row-major over the Gy x Gx grid).
    blocks : Tensor (J, C, b, b) or (1, C, b, b)
        Replacement content (broadcast when one block is given).
    block : int
        Block side b.
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
    """
    c, h, w = image.shape
    gx = w // block
    n = cells.shape[0]
    out = image.unsqueeze(0).expand(n, c, h, w).clone(memory_format=memory_format)
    offsets = torch.arange(block, device=image.device)
    ys = ((cells // gx) * block)[:, None] + offsets  # (J, b)
    xs = ((cells % gx) * block)[:, None] + offsets
    rows = torch.arange(n, device=image.device)[:, None, None, None]
    chans = torch.arange(c, device=image.device)[None, :, None, None]
    out[rows, chans, ys[:, None, :, None], xs[:, None, None, :]] = blocks.to(image.dtype).expand(n, c, block, block)
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
    block : int
        Block side b.
    """

    name: str
    stochastic: bool
    block: int
    _source: torch.Tensor  # natural: bank blocks (N,C,b,b); blur: blurred blocks (Gy*Gx,C,b,b); else (1,C,b,b)
    _table: torch.Tensor | None = None  # natural: (cells, draws) bank indices

    def replacements(self, cells: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Replacement blocks for the pairs (cells[j], draws[j]), shape (J, C, b, b) or (1, C, b, b).

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


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    img = image.unsqueeze(0)
    pad = torch.nn.functional.pad(img, (radius, radius, radius, radius), mode="reflect")
    kx = kernel.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = kernel.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1)
    out = torch.nn.functional.conv2d(pad, kx, groups=c)
    out = torch.nn.functional.conv2d(out, ky, groups=c)
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
    image : Tensor (C, H, W)
        The explained image (``blur`` blurs it; ``mean`` uses its colour without a bank).
    block : int
        Block side b.
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
    c, h, w = image.shape
    n_cells = (h // block) * (w // block)
    if bank is not None:
        if not isinstance(bank, PatchBank):
            raise TypeError(f"bank must be a pdcr_lab.PatchBank, got {type(bank).__name__}")
        if bank.block != block:
            raise ValueError(f"bank holds {bank.block}x{bank.block} blocks but block={block}; build the bank with block={block}")
        if bank.channels != c:
            raise ValueError(f"bank blocks have {bank.channels} channels but the image has {c}")
    if name == "natural":
        if bank is None:
            raise ValueError("intervention='natural' needs bank=PatchBank(...) of natural blocks (see PatchBank.from_images)")
        table = torch.from_numpy(draw_table(seed, n_cells, n_draws, len(bank), prefix=prefix))
        return Intervention(name, True, block, bank.blocks, table)
    if name == "zero":
        source = torch.zeros(1, c, block, block)
    elif name == "mean":
        colour = bank.mean() if bank is not None else image.mean(dim=(1, 2))
        source = colour.reshape(1, c, 1, 1).expand(1, c, block, block).clone()
    else:  # blur
        blurred = _gaussian_blur(image.float().cpu(), sigma=block / 2)
        source = block_grid(blurred, block).reshape(n_cells, c, block, block).contiguous()
    return Intervention(name, False, block, source)
