"""A picture of a few samples of each embedded dataset, with their masks outlined."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._registry import list_datasets, load

__all__ = ["plot_samples"]


def plot_samples(
    names: Sequence[str] | None = None,
    n: int = 5,
    *,
    size: int = 96,
    seed: int = 0,
    split: str = "test",
    path: str | os.PathLike | None = None,
) -> Any:
    """Show `n` images of each dataset, each above a copy with its mask painted in.

    Parameters
    ----------
    names : sequence of str, optional
        Datasets to show; default: all of :func:`list_datasets`.
    n : int
        Samples per dataset, spread evenly over the split.
    size, seed : int
        Passed to :func:`load`.
    split : str
        Split to draw from.
    path : path, optional
        Also save the figure there (PNG).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    names = list(names or list_datasets(ndim=2))  # a gallery of 2-D images; volumes have their own views
    fig, axes = plt.subplots(2 * len(names), n, figsize=(1.9 * n, 3.9 * len(names)), squeeze=False)
    for k_name, name in enumerate(names):
        data = load(name, size=size, seed=seed)
        images, masks, ids = data.images(split), data.masks(split), data.ids(split)
        picks = [k * len(ids) // n for k in range(n)]
        # One row of images, and below it the same images dimmed with the mask painted in cyan.
        for col, k in enumerate(picks):
            image = images[k].permute(1, 2, 0).expand(-1, -1, 3).numpy()
            mask = masks[k].numpy()[..., None]
            overlay = np.where(mask, [0.0, 0.9, 0.9], 0.35 * image)
            for ax, picture in ((axes[2 * k_name, col], image), (axes[2 * k_name + 1, col], overlay)):
                ax.imshow(picture, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[2 * k_name, col].set_title(ids[k], fontsize=7)
        axes[2 * k_name, 0].set_ylabel(name, fontsize=10)
        axes[2 * k_name + 1, 0].set_ylabel("mask", fontsize=9)
    fig.suptitle("pdcr_lab embedded datasets, test split (mask in cyan)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
