"""Shared fixtures: tiny models, small images and banks, and the optional reference data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdcr_reference"

requires_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason="reference data (../shared/data/pdcr_reference) not present"
)


@pytest.fixture(autouse=True)
def _seed_everything():
    # Fixed seeds so that every test sees the same random models and images.
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip("reference data (../shared/data/pdcr_reference) not present")
    return REFERENCE


class TinyNet(torch.nn.Module):
    """A random 2-layer CNN whose sigmoid output hovers around 0.5, so block effects are non-trivial."""

    def __init__(self, channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Conv2d(channels, 6, 3, padding=2, dilation=2)
        self.b = torch.nn.Conv2d(6, 1, 5, padding=2)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.4

    def forward(self, x):
        return torch.sigmoid(self.b(torch.tanh(self.a(x - 0.5))))


@pytest.fixture
def tiny_net() -> TinyNet:
    return TinyNet().eval()


@pytest.fixture
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 32, 32, generator=g)


@pytest.fixture
def small_bank():
    from pdcr_lab import PatchBank

    g = torch.Generator().manual_seed(2)
    return PatchBank(torch.rand(6, 3, 4, 4, generator=g), {"recipe": "test"})


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tests on tiny models: as fast as several, and far
    faster on a shared machine where several threads spin-wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
