"""pdcr_lab.interventions: what replaces a block (natural, zero, mean, blur), the draw table, the
vectorised composition of perturbed images, and the bank checks of :func:`make_intervention`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdcr_lab import PatchBank, explain
from pdcr_lab.interventions import block_grid, compose, draw_table, make_intervention

ROI = (12, 12, 8, 8)


def test_compose_replaces_exactly_one_block(image):
    blocks = torch.full((2, 3, 4, 4), 7.0)
    out = compose(image, torch.tensor([0, 9]), blocks, 4)
    assert out.shape == (2, 3, 32, 32)
    assert torch.all(out[0, :, :4, :4] == 7) and torch.all(out[1, :, 4:8, 4:8] == 7)
    changed = (out != image).any(dim=1)
    assert int(changed[0].sum()) == 16 and int(changed[1].sum()) == 16


def test_compose_in_channels_last_layout_holds_the_same_pixels(image):
    cells = torch.tensor([3, 63, 17])
    blocks = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    plain = compose(image, cells, blocks, 4)
    last = compose(image, cells, blocks, 4, memory_format=torch.channels_last)
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, last)
    assert torch.equal(block_grid(plain[1], 4)[7, 7], blocks[1])  # cell 63 is the bottom-right block


def test_block_grid_is_a_view_in_row_major_cell_order():
    image = torch.arange(2 * 6 * 9, dtype=torch.float32).reshape(2, 6, 9)
    grid = block_grid(image, 3)
    assert tuple(grid.shape) == (2, 3, 2, 3, 3)
    for by in range(2):
        for bx in range(3):
            assert torch.equal(grid[by, bx], image[:, 3 * by : 3 * by + 3, 3 * bx : 3 * bx + 3])
    assert grid.data_ptr() == image.data_ptr()  # no copy


def test_draw_table_is_fixed_by_the_seed_and_keeps_its_prefix():
    table = draw_table(3, 10, 20, 7)
    assert table.shape == (10, 20) and table.min() >= 0 and table.max() < 7
    np.testing.assert_array_equal(table, draw_table(3, 10, 20, 7))
    assert not np.array_equal(table, draw_table(4, 10, 20, 7))
    longer = draw_table(3, 10, 50, 7, prefix=20)
    np.testing.assert_array_equal(longer[:, :20], table)
    assert longer.shape == (10, 50)


def test_replacements_of_each_intervention(image, small_bank):
    cells, draws = torch.tensor([0, 5, 63]), torch.tensor([1, 0, 2])
    zero = make_intervention("zero", image, 4, bank=None, seed=0, n_draws=3)
    assert not zero.stochastic and torch.equal(zero.replacements(cells, draws), torch.zeros(1, 3, 4, 4))

    mean = make_intervention("mean", image, 4, bank=small_bank, seed=0, n_draws=3)
    colour = mean.replacements(cells, draws)[0, :, 0, 0]
    torch.testing.assert_close(colour, small_bank.mean())
    no_bank = make_intervention("mean", image, 4, bank=None, seed=0, n_draws=3)
    torch.testing.assert_close(no_bank.replacements(cells, draws)[0, :, 2, 3], image.mean(dim=(1, 2)))

    natural = make_intervention("natural", image, 4, bank=small_bank, seed=9, n_draws=3)
    table = draw_table(9, 64, 3, len(small_bank))
    expected = small_bank.blocks[table[cells.numpy(), draws.numpy()]]
    assert natural.stochastic and torch.equal(natural.replacements(cells, draws), expected)

    blur = make_intervention("blur", image, 4, bank=None, seed=0, n_draws=3)
    out = blur.replacements(cells, draws)
    assert tuple(out.shape) == (3, 3, 4, 4) and not blur.stochastic
    own = block_grid(image, 4).reshape(64, 3, 4, 4)[cells]
    assert out.std() < own.std()  # blurred: smoother than the blocks it replaces
    assert float((out - own).abs().mean()) < 0.3  # and close to the image's own colours


@pytest.mark.parametrize("name", ["mean", "blur"])
def test_deterministic_interventions_use_one_forward_per_block(tiny_net, image, small_bank, name):
    ds = explain(tiny_net, image, roi=ROI, bank=small_bank, intervention=name, block=4)
    assert int(ds.forwards) == 61
    assert ds.attrs["intervention"] == name


# -- errors raised by make_intervention -------------------------------------------------------------


def test_natural_needs_a_bank(tiny_net, image, quick_explain):
    with pytest.raises(ValueError, match=r"intervention='natural' needs bank=PatchBank"):
        quick_explain(tiny_net, image, intervention="natural")


def test_bank_block_size_and_channels(tiny_net, image, quick_explain):
    with pytest.raises(ValueError, match=r"bank holds 8x8 blocks but block=4"):
        quick_explain(tiny_net, image, intervention="natural", bank=PatchBank(torch.rand(3, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"bank blocks have 1 channels but the image has 3"):
        quick_explain(tiny_net, image, intervention="natural", bank=PatchBank(torch.rand(3, 1, 4, 4)))
    with pytest.raises(TypeError, match=r"bank must be a pdcr_lab.PatchBank"):
        quick_explain(tiny_net, image, intervention="natural", bank=torch.rand(3, 3, 4, 4))
