"""Testing helpers that ship with the package: a naive reference loop and toy models.

:func:`reference_explain` follows the authors' reference implementation literally (a Python loop over
blocks: one batch of S coarse draws, then one batch of N fine draws, Dice computed on the full
image), so the batched engine can be checked against it and benchmarked against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["reference_explain", "CenterSurroundModel", "PlantedCauseModel", "OutOfMemoryAbove", "dice_points"]


def dice_points(pred: torch.Tensor, target: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """100 x DSC inside `roi`, written out as in the reference (full-image masks, no cropping)."""
    p = pred * roi
    g = target * roi
    return 100.0 * 2.0 * (p * g).sum(dim=(-1, -2)) / (p.sum(dim=(-1, -2)) + g.sum(dim=(-1, -2)) + 1e-10)


def reference_explain(
    model: nn.Module,
    image: torch.Tensor,
    roi: tuple[int, int, int, int],
    *,
    target: torch.Tensor | None = None,
    bank_blocks: torch.Tensor | None = None,
    table: np.ndarray | None = None,
    block: int = 8,
    coarse: int = 3,
    fine: int = 50,
    tau: float = 0.02,
    threshold: float = 0.5,
) -> tuple[np.ndarray, int]:
    """PdCR map by a plain per-block loop (the reference's structure); returns (map, forwards).

    `bank_blocks` (N, C, b, b) with the draw `table` (cells, S + N) gives the natural
    intervention; without a bank the block is set to zero with one forward per block.
    """
    model.eval()
    c, h, w = image.shape
    r0, c0, rh, rw = roi
    roi_mask = torch.zeros(h, w)
    roi_mask[r0 : r0 + rh, c0 : c0 + rw] = 1
    gy, gx = h // block, w // block

    def outcome(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pred = (model(batch)[:, 0] > threshold).float()
        return dice_points(pred, ref, roi_mask)

    with torch.no_grad():
        factual = (model(image[None])[:, 0] > threshold).float()[0]
    ref = factual if target is None else target.float()
    m0 = float(outcome(image[None])[0])
    forwards = 1
    ate = np.zeros((gy, gx))
    for by in range(gy):
        for bx in range(gx):
            ys, xs = by * block, bx * block
            if roi_mask[ys : ys + block, xs : xs + block].any():
                continue
            cell = by * gx + bx

            def perturbed(draws: Any) -> torch.Tensor:
                batch = image[None].repeat(len(draws), 1, 1, 1)
                for i, d in enumerate(draws):
                    batch[i, :, ys : ys + block, xs : xs + block] = 0 if bank_blocks is None else bank_blocks[d]
                return batch

            if bank_blocks is None:
                delta = float(outcome(perturbed([0]))[0]) - m0
                forwards += 1
                ate[by, bx] = 0.0 if abs(delta) < tau else delta
                continue
            coarse_m = outcome(perturbed(table[cell, :coarse])) - m0
            forwards += coarse
            if bool((coarse_m.abs() < tau).all()):
                continue
            fine_m = outcome(perturbed(table[cell, coarse : coarse + fine])) - m0
            forwards += fine
            value = float(fine_m.double().mean())
            ate[by, bx] = 0.0 if abs(value) < tau else value
    return ate, forwards


class CenterSurroundModel(nn.Module):
    """One-channel toy segmenter: foreground where the local mean (k x k box filter) exceeds 0.5.

    Its receptive field is exactly k x k, so blocks farther than k // 2 pixels from the RoI
    provably have no effect: a local model with a known answer.
    """

    def __init__(self, k: int = 5, channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, k, padding=k // 2, bias=False)
        nn.init.constant_(self.conv.weight, 1.0 / (k * k * channels))
        self.sharpness = 20.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.sharpness * (self.conv(x) - 0.5))


class PlantedCauseModel(nn.Module):
    """Segments bright pixels only when a marker block far away is bright: a planted remote cause.

    Output = sigmoid(s * (x - 0.5)) * gate, gate = sigmoid(s * (mean of the marker block - 0.5)).
    Replacing the marker block with dark content removes the whole segmentation: the marker
    supports every RoI (negative ATE), and no other block outside the RoI matters.
    """

    def __init__(self, marker: tuple[int, int, int], sharpness: float = 30.0) -> None:
        super().__init__()
        self.marker = marker  # (row, col, size)
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, c, s = self.marker
        gate = torch.sigmoid(self.sharpness * (x[:, :, r : r + s, c : c + s].mean(dim=(1, 2, 3)) - 0.5))
        pixel = torch.sigmoid(self.sharpness * (x.mean(dim=1, keepdim=True) - 0.5))
        return pixel * gate[:, None, None, None]


class OutOfMemoryAbove(nn.Module):
    """Wraps `net` and raises ``torch.OutOfMemoryError`` for batches larger than `limit`, like a device
    whose memory is full; ``largest`` records the largest batch that ran."""

    def __init__(self, net: nn.Module, limit: int, message: str = "out of memory (simulated)") -> None:
        super().__init__()
        self.net, self.limit, self.message, self.largest = net, limit, message, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(self.message)
        self.largest = max(self.largest, x.shape[0])
        return self.net(x)
