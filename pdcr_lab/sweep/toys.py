"""Small deterministic models and data for sweep examples and tests.

They also show the two hooks a config uses to bring its own material:

* ``factory: "pdcr_lab.sweep.toys:tiny_cnn"`` in a model entry: ``factory(**options)`` (plus
  ``dataset=<name>`` when the factory takes it) returns a ``torch.nn.Module`` or ``(module, meta)``;
* ``factory: "pdcr_lab.sweep.toys:blobs"`` in a dataset entry: ``factory(**options)`` returns a
  :class:`~pdcr_lab.datasets.SegmentationData` whose ``.bank`` holds the natural blocks.

Factories must be importable on the workers and deterministic (same options, same weights and
images): a task can run on any worker, and the driver checks each image's SHA-1 there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..banks import PatchBank
from ..datasets import SegmentationData

__all__ = ["TinyCNN", "tiny_cnn", "blobs"]


class TinyCNN(nn.Module):
    """A random CNN whose sigmoid output hovers around 0.5, so block effects are non-trivial.

    ``depth`` extra 3 x 3 layers of ``width`` channels make it as slow as a benchmark needs.

    Parameters
    ----------
    channels : int
        Input channels.
    width : int
        Hidden channels.
    depth : int
        Extra residual 3 x 3 layers.
    seed : int
        Seed of the random weights.
    """

    def __init__(self, channels: int = 3, width: int = 6, depth: int = 0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Conv2d(channels, width, 3, padding=2, dilation=2)
        self.middle = nn.Sequential(*[nn.Conv2d(width, width, 3, padding=1) for _ in range(depth)])
        self.b = nn.Conv2d(width, 1, 5, padding=2)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.4
        for layer in self.middle:
            layer.weight.data /= 3.0 * width**0.5  # keeps activations O(1) whatever the depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities.

        Parameters
        ----------
        x : Tensor (B, channels, H, W)
            Images in [0, 1].

        Returns
        -------
        Tensor (B, 1, H, W)
        """
        h = torch.tanh(self.a(x - 0.5))
        for layer in self.middle:
            h = torch.tanh(layer(h)) + h
        return torch.sigmoid(self.b(h))


def tiny_cnn(*, seed: int = 0, channels: int = 3, width: int = 6, depth: int = 0, dataset: str | None = None) -> tuple[nn.Module, dict]:
    """A :class:`TinyCNN` (the same weights for every dataset; `dataset` is accepted and recorded).

    Parameters
    ----------
    seed, channels, width, depth
        As in :class:`TinyCNN`.
    dataset : str, optional
        Name of the dataset the sweep asks the model for; only recorded in the metadata.

    Returns
    -------
    (TinyCNN, dict)
        The model in eval mode and its metadata (``params``, ``dataset``, ``seed``).

    Examples
    --------
    >>> model, meta = tiny_cnn(seed=1)
    >>> tuple(model(torch.zeros(1, 3, 32, 32)).shape), meta["params"]
    ((1, 1, 32, 32), 319)
    """
    model = TinyCNN(channels, width, depth, seed).eval()
    return model, {"params": sum(p.numel() for p in model.parameters()), "dataset": dataset or "", "seed": seed}


def blobs(*, n: int = 4, size: int = 32, block: int = 8, channels: int = 3, seed: int = 0, n_bank: int = 8) -> SegmentationData:
    """`n` test images of one bright ellipse on noise (mask = the ellipse), and a bank from `n_bank` others.

    Parameters
    ----------
    n : int
        Test images (the split a sweep explains).
    size : int
        Image side in pixels.
    block : int
        Block side of the bank.
    channels : int
        Image channels.
    seed : int
        Seed of every image.
    n_bank : int
        Further images (the ``train`` split) the natural bank is cut from, 10 blocks each; 0: no bank.

    Examples
    --------
    >>> data = blobs(n=2, size=32)
    >>> tuple(data.images("test").shape), data.ids("test"), data.bank.block
    ((2, 3, 32, 32), ['blob_008', 'blob_009'], 8)
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n_bank + n):
        cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
        ry, rx = rng.uniform(0.15 * size, 0.3 * size, 2)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        images.append(np.clip(rng.uniform(0.0, 0.35, (channels, size, size)) + 0.55 * mask, 0.0, 1.0))
        masks.append(mask)
    images_t = torch.from_numpy(np.asarray(images, dtype=np.float32))
    masks_t = torch.from_numpy(np.asarray(masks))
    ids = [f"blob_{j:03d}" for j in range(n_bank + n)]
    arrays = {"train": (images_t[:n_bank], masks_t[:n_bank]), "test": (images_t[n_bank:], masks_t[n_bank:])}
    split_ids = {"train": ids[:n_bank], "test": ids[n_bank:]}
    split_meta = {"train": [{} for _ in range(n_bank)], "test": [{} for _ in range(n)]}
    info = {"name": "blobs", "generator": "pdcr_lab.sweep.toys.blobs", "seed": seed, "size": size}

    def bank() -> PatchBank:
        return PatchBank.from_images(images_t[:n_bank], block=block, per_image=10, seed=seed, ids=ids[:n_bank])

    return SegmentationData("blobs", arrays, split_ids, split_meta, info, bank if n_bank else None)
