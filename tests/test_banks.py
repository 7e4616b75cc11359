"""pdcr_lab.banks: PatchBank construction (from blocks, images, a folder), its properties, the
``.npz`` round trip and the errors it raises."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pdcr_lab import PatchBank


def test_empty_bank():
    with pytest.raises(ValueError, match=r"blocks is empty"):
        PatchBank(torch.rand(0, 3, 4, 4))


def test_blocks_must_be_square_and_finite():
    with pytest.raises(ValueError, match=r"blocks must have shape \(N, C, b, b\)"):
        PatchBank(torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"blocks contain NaN or Inf values"):
        PatchBank(torch.full((1, 1, 2, 2), float("nan")))


def test_properties_and_content_hash(small_bank):
    assert (len(small_bank), small_bank.block, small_bank.channels) == (6, 4, 3)
    torch.testing.assert_close(small_bank.mean(), small_bank.blocks.mean(dim=(0, 2, 3)))
    same = PatchBank(small_bank.blocks.clone(), {"recipe": "other"})
    assert same.id == small_bank.id and len(same.id) == 12  # the content decides, not the provenance
    assert PatchBank(small_bank.blocks + 0.5).id != small_bank.id
    assert repr(small_bank) == "PatchBank(6 blocks of 3x4x4, recipe='test')"


def test_from_images_cuts_distinct_grid_blocks():
    images = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8) / 128
    bank = PatchBank.from_images(images, block=4, per_image=3, seed=5, ids=["a", "b"])
    assert len(bank) == 6 and bank.provenance["sources"] == ["a", "b"] and bank.provenance["seed"] == 5
    grid = images.reshape(2, 1, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 4, 1, 4, 4)
    for k, block in enumerate(bank.blocks):
        source = k // 3
        matches = [j for j in range(4) if torch.equal(block, grid[source, j])]
        assert len(matches) == 1, "every block is a grid block of its own source image"
    for source in range(2):  # drawn without replacement inside one image
        assert len({bank.blocks[k].sum().item() for k in range(3 * source, 3 * source + 3)}) == 3
    again = PatchBank.from_images(images, block=4, per_image=3, seed=5)
    assert torch.equal(again.blocks, bank.blocks)
    assert len(PatchBank.from_images(images, block=4, per_image=100)) == 8  # all cells when asked for more


def test_from_images_errors():
    with pytest.raises(ValueError, match=r"block=3 does not tile images\[0\] of size 8x8"):
        PatchBank.from_images(torch.rand(1, 1, 8, 8), block=3)
    with pytest.raises(ValueError, match=r"images\[1\] has 3 channels, images\[0\] has 1"):
        PatchBank.from_images([torch.rand(1, 8, 8), torch.rand(3, 8, 8)], block=4)
    with pytest.raises(ValueError, match=r"ids has 1 names for 2 images"):
        PatchBank.from_images(torch.rand(2, 1, 8, 8), block=4, ids=["a"])
    with pytest.raises(ValueError, match=r"images is empty"):
        PatchBank.from_images([], block=4)


def test_save_load_round_trip(small_bank, tmp_path):
    path = small_bank.save(tmp_path / "sub" / "bank.npz")
    back = PatchBank.load(path)
    assert torch.equal(back.blocks, small_bank.blocks) and back.provenance == small_bank.provenance
    assert back.id == small_bank.id
    assert sorted(p.name for p in path.parent.iterdir()) == ["bank.npz"], "no temporary left behind"


def test_from_folder_reads_blocks_in_name_order(tmp_path):
    colours = {"img1_0_8.png": (255, 0, 0), "img1_8_0.png": (0, 255, 0), "img2_0_0.png": (0, 0, 255)}
    for name, colour in colours.items():
        Image.new("RGB", (4, 4), colour).save(tmp_path / name)
    bank = PatchBank.from_folder(tmp_path)
    assert len(bank) == 3 and bank.block == 4 and bank.channels == 3
    assert bank.provenance["n_images"] == 2 and bank.provenance["n_files"] == 3
    np.testing.assert_array_equal(bank.blocks[:, :, 0, 0].numpy(), [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    Image.new("RGB", (8, 8)).save(tmp_path / "img3_0_0.png")
    with pytest.raises(ValueError, match=r"has shape \(8, 8, 3\), the first block has \(4, 4, 3\)"):
        PatchBank.from_folder(tmp_path)
    with pytest.raises(ValueError, match=r"holds no files matching '\*.jpg'"):
        PatchBank.from_folder(tmp_path, pattern="*.jpg")
    with pytest.raises(FileNotFoundError, match=r"is not a folder of block images"):
        PatchBank.from_folder(tmp_path / "missing")


def test_block_folder_of_16_bit_images_is_scaled_by_its_bit_depth(tmp_path):
    """16-bit blocks divided by 255 would load as values up to 257: plausible-looking and wrong."""
    import numpy as np
    from PIL import Image

    from pdcr_lab.banks import PatchBank

    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "a_0_0.png")
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "a_0_8.png")
    bank = PatchBank.from_folder(tmp_path)
    assert bank.blocks.amax().item() == 1.0 and abs(bank.blocks[1].mean().item() - 0.5) < 1e-4
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "b_0_0.png")
    with pytest.raises(ValueError, match=r"hold \['uint16', 'uint8'\] values; expected 8-bit or 16-bit images of one kind"):
        PatchBank.from_folder(tmp_path)
