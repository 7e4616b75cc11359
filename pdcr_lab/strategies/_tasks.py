"""Generated tasks and hand-built models whose perceptual strategy is known by construction.

They validate the labels of :func:`pdcr_lab.strategies.classify` (``tests/test_strategies.py``):

* :class:`pdcr_lab.testing.CenterSurroundModel` (a k x k box filter): **local**; blocks farther than
  k // 2 pixels from the RoI provably have no effect.
* :class:`GlobalContrastModel`: a pixel is foreground when it is brighter than the *image's mean*
  (global average pooling): every block moves the threshold of every RoI pixel: **global**.
* :class:`ConnectivityModel`: foreground = bright pixels connected to a source region by a chain of
  bright pixels (k rounds of 3 x 3 max-pooling gated by brightness). On :func:`path_task` a vessel
  is foreground only because it reaches the distant source, so cutting it anywhere between the
  source and the RoI erases the RoI's segmentation: **sequential**.

:func:`path_task` draws the images: a dark noisy background, a bright source block at the left
edge, one vessel from the source across the image and unconnected distractor vessels; mask = the
pixels connected to the source; the RoI sits on the connected vessel far from the source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int
from ..banks import PatchBank

__all__ = ["PathTask", "path_task", "ConnectivityModel", "GlobalContrastModel"]


@dataclass(frozen=True)
class PathTask:
    """Images of the path task with everything needed to explain them.

    Attributes
    ----------
    images : float32 tensor (N, 1, H, W) in [0, 1]
    masks : bool tensor (N, H, W), the pixels connected to the source (the task's ground truth)
    vessels : bool tensor (N, H, W), every vessel pixel (connected or not): the image structure
    rois : list of (row, col, height, width) boxes on the connected vessel, one per image
    source : (row, col, height, width) box of the source
    bank : PatchBank of natural blocks cut from further images of the task (never explained)
    block : block side the task is built for
    """

    images: torch.Tensor
    masks: torch.Tensor
    vessels: torch.Tensor
    rois: list[tuple[int, int, int, int]]
    source: tuple[int, int, int, int]
    bank: PatchBank
    block: int


#: Grey levels of the path task: background noise around BACKGROUND, vessels at VESSEL, and every
#: image shifted so that its mean is exactly MEAN (the global model's reference).
BACKGROUND, VESSEL, MEAN = 0.2, 0.85, 0.27


def _block_path(
    rng: np.random.Generator, start: tuple[int, int], stop_col: int, rows: tuple[int, int]
) -> list[tuple[int, int]]:
    """A self-avoiding chain of blocks from `start` to column `stop_col`: steps right, up or down
    (never back left), rows kept inside `rows` (inclusive)."""
    path = [start]
    r, c = start
    last = 0
    while c < stop_col:
        step = int(rng.choice([-1, 1])) if rng.random() < 0.4 else 0
        if step and step != -last and rows[0] <= r + step <= rows[1]:
            r, last = r + step, step
        else:
            c, last = c + 1, 0
        path.append((r, c))
    return path


def _paint(mask: np.ndarray, path: list[tuple[int, int]], block: int, width: int) -> None:
    """Draw a vessel `width` pixels wide through the centres of the chain's blocks.

    Steps between edge neighbours cross block borders at right angles, so the vessel never runs
    along a border inside two blocks at once: every block of the chain is necessary to it.
    """
    lo = (block - width) // 2
    for (r0, c0), (r1, c1) in zip(path[:-1], path[1:]):
        top, bottom = min(r0, r1) * block + lo, max(r0, r1) * block + lo + width
        left, right = min(c0, c1) * block + lo, max(c0, c1) * block + lo + width
        mask[top:bottom, left:right] = True


def _draw(rng: np.random.Generator, size: int, block: int, width: int) -> tuple[np.ndarray, ...]:
    """One image: (image (H, W), connected mask, all vessels, source box)."""
    grid = size // block
    mid = grid // 2
    band = max(1, grid // 6)
    source = (mid * block, 0, block, block)
    connected = np.zeros((size, size), bool)
    connected[source[0] : source[0] + block, 0:block] = True
    # The connected vessel leaves the source (one block at the left edge) and crosses the middle band.
    _paint(connected, _block_path(rng, (mid, 0), grid - 1, (mid - band, mid + band)), block, width)
    # Distractors: the same kind of vessel in the top and bottom bands, one empty block row away
    # from the middle band, starting away from the source: bright but never connected to it.
    vessels = connected.copy()
    for rows in ((0, mid - band - 2), (mid + band + 2, grid - 1)):
        if rows[1] < rows[0]:
            continue
        start = (int(rng.integers(rows[0], rows[1] + 1)), int(rng.integers(2, max(3, grid // 3))))
        _paint(vessels, _block_path(rng, start, grid - 1, rows), block, width)
    # White-noise background: dense grey levels everywhere, so the global model's threshold always
    # has RoI pixels near it; shifted so that the image's mean is MEAN.
    background = BACKGROUND + 0.08 * rng.standard_normal((size, size))
    image = np.where(vessels, VESSEL + 0.03 * rng.standard_normal((size, size)), background)
    image[~vessels] += (MEAN * image.size - image.sum()) / (~vessels).sum()
    image[source[0] : source[0] + block, 0:block] = 0.95
    return np.clip(image, 0, 1).astype(np.float32), connected, vessels, source


def _roi_on(mask: np.ndarray, size: int, block: int, roi_size: int) -> tuple[int, int, int, int]:
    """The grid-aligned RoI in the right quarter of the image holding the most connected pixels."""
    col = size - block - roi_size
    best, row = -1, 0
    for r in range(0, size - roi_size + 1, block):
        count = int(mask[r : r + roi_size, col : col + roi_size].sum())
        if count > best:
            best, row = count, r
    return row, col, roi_size, roi_size


def path_task(n: int = 2, *, size: int = 48, block: int = 4, roi_size: int | None = None, width: int | None = None,
              bank_images: int = 8, seed: int = 0) -> PathTask:
    """Generate the path task: `n` images to explain plus a bank cut from `bank_images` more.

    Parameters
    ----------
    n : int
        Images to explain.
    size, block : int
        Image side and block side (size must be a multiple of block; default 48 and 4: a 12 x 12
        grid like the embedded datasets' 96 / 8).
    roi_size : int, optional
        RoI side (default 2 blocks).
    width : int, optional
        Vessel width in pixels (default block // 2, centred in the block).
    bank_images : int
        Further images of the task the natural bank is cut from (10 blocks each).
    seed : int
        Seed of everything drawn.

    Examples
    --------
    >>> task = path_task(1, bank_images=2, seed=0)
    >>> tuple(task.images.shape), task.rois[0][2:], task.source, len(task.bank)
    ((1, 1, 48, 48), (8, 8), (24, 0, 4, 4), 20)
    """
    n = check_int("n", n, minimum=1)
    size = check_int("size", size, minimum=8)
    block = check_int("block", block, minimum=1)
    if size % block:
        raise ValueError(f"block={block} does not tile size={size}")
    roi_size = 2 * block if roi_size is None else check_int("roi_size", roi_size, minimum=1)
    width = max(1, block // 2) if width is None else check_int("width", width, minimum=1)
    rng = np.random.default_rng(seed)
    drawn = [_draw(rng, size, block, width) for _ in range(n + check_int("bank_images", bank_images, minimum=1))]
    images = torch.from_numpy(np.stack([d[0] for d in drawn]))[:, None]
    masks = torch.from_numpy(np.stack([d[1] for d in drawn]))
    vessels = torch.from_numpy(np.stack([d[2] for d in drawn]))
    rois = [_roi_on(d[1], size, block, roi_size) for d in drawn[:n]]
    bank = PatchBank.from_images(images[n:], block=block, per_image=10, seed=seed,
                                 ids=[f"path_{seed}_{i}" for i in range(n, len(drawn))])
    bank.provenance.update({"task": "path", "size": size, "width": width})
    return PathTask(images[:n], masks[:n], vessels[:n], rois, drawn[0][3], bank, block)


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 max filter (zero padding; inputs are >= 0) as two separable passes of shifted maxima:
    several times faster on a CPU than ``F.max_pool2d`` with stride 1."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


class ConnectivityModel(nn.Module):
    """Foreground = bright pixels connected to the source box by a chain of bright pixels.

    gate = clamp(s (x - level) + 1/2, 0, 1); seed_0 = gate inside the source box, 0 elsewhere;
    seed_{t+1} = maxpool3x3(seed_t) * gate, for t < iterations (or until nothing changes);
    output = seed_T. `iterations` must exceed the longest chain (in 8-neighbour pixel steps)
    between the source and the RoI. Evidence travels one
    pixel per iteration along bright pixels only, so the output at a pixel depends on the whole chain
    between it and the source: a model that must follow a path to decide.

    Parameters
    ----------
    source : (row, col, height, width)
        Box of the source region (``PathTask.source``).
    iterations : int
        T, the most propagation steps.
    level : float
        Grey level at which the gate is 1/2.
    sharpness : float
        s, the slope of the gate.

    Examples
    --------
    >>> task = path_task(1, bank_images=1, seed=0)
    >>> model = ConnectivityModel(task.source)
    >>> pred = model(task.images)[0, 0] > 0.5
    >>> bool((pred == task.masks[0]).float().mean() > 0.95)
    True
    """

    def __init__(self, source: tuple[int, int, int, int], iterations: int = 160, level: float = 0.5,
                 sharpness: float = 30.0) -> None:
        super().__init__()
        self.source = tuple(int(v) for v in source)
        self.iterations = int(iterations)
        self.level = float(level)
        self.sharpness = float(sharpness)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground scores in [0, 1].

        Parameters
        ----------
        x : Tensor (B, C, H, W)
            Images in [0, 1]; the channel mean is the grey level.

        Returns
        -------
        Tensor (B, 1, H, W)
        """
        # A hard sigmoid: exactly 0 on the background and 1 on vessels, so the propagated values
        # never decay into denormal floats (slow on CPUs) and stop changing once the front has passed.
        gate = torch.clamp(self.sharpness * (x.mean(dim=1, keepdim=True) - self.level) + 0.5, 0.0, 1.0)
        r, c, h, w = self.source
        seed = torch.zeros_like(gate)
        seed[..., r : r + h, c : c + w] = gate[..., r : r + h, c : c + w]
        for step in range(self.iterations):
            grown = _max3x3(seed) * gate
            # Once the front has travelled every chain the values stop changing exactly; stopping
            # then gives the same output as running all the iterations, much faster.
            if step % 8 == 7 and torch.equal(grown, seed):
                break
            seed = grown
        return seed


class GlobalContrastModel(nn.Module):
    """Foreground = pixels brighter than a threshold set by the image's mean (global average pooling).

    output = sigmoid(s (x - t)), t = level + gain * (mean(X) - reference). The threshold of every
    RoI pixel is a global average over the whole image, so every block moves it with the same
    weight (1 / number of blocks) and nothing else outside the RoI's own pixels matters: a model
    whose output in the RoI depends on the statistics of the whole image. A block holds only 1/144
    of the mean on a 12 x 12 grid; `gain` amplifies the pooled statistic so that replacing one
    block moves the threshold past a few RoI pixels (an effect above tau). The defaults fit
    :func:`path_task`: images of mean ``MEAN`` whose background noise is centred on ``BACKGROUND``.

    Parameters
    ----------
    level : float
        Threshold of an image whose mean equals `reference`.
    reference : float
        The image mean at which the threshold is `level`.
    gain : float
        How far the threshold moves per unit of image mean.
    sharpness : float
        s, the slope of the output sigmoid.
    """

    def __init__(self, level: float = BACKGROUND, reference: float = MEAN, gain: float = 10.0,
                 sharpness: float = 200.0) -> None:
        super().__init__()
        self.level = float(level)
        self.reference = float(reference)
        self.gain = float(gain)
        self.sharpness = float(sharpness)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities.

        Parameters
        ----------
        x : Tensor (B, C, H, W)
            Images in [0, 1]; the channel mean is the grey level.

        Returns
        -------
        Tensor (B, 1, H, W)
        """
        grey = x.mean(dim=1, keepdim=True)
        threshold = self.level + self.gain * (grey.mean(dim=(2, 3), keepdim=True) - self.reference)
        return torch.sigmoid(self.sharpness * (grey - threshold))
