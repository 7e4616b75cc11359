"""pdcr_lab.cli: the ``pdcr-lab`` command (its parser, help, version and the ``explain`` job end to
end on the embedded demo). The sub-commands other modules contribute are tested with those modules."""

from __future__ import annotations

import pytest

import pdcr_lab
from pdcr_lab import load, validate
from pdcr_lab.cli import build_parser, main


def test_without_a_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: pdcr-lab" in out and "explain" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pdcr_lab {pdcr_lab.__version__}"


def test_explain_options_default_to_the_paper():
    args = build_parser().parse_args(["explain"])
    assert (args.coarse, args.fine, args.tau) == (pdcr_lab.PAPER.coarse, pdcr_lab.PAPER.fine, pdcr_lab.PAPER.tau)
    assert args.intervention == "natural" and args.roi is None
    args = build_parser().parse_args(["explain", "--roi", "8", "16", "24", "32", "--intervention", "blur"])
    assert args.roi == [8, 16, 24, 32] and args.intervention == "blur"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["explain", "--intervention", "gaussian"])


def test_explain_demo_writes_a_valid_result_and_a_figure(tmp_path, capsys):
    code = main(["explain", "--demo", "--intervention", "zero", "--coarse", "1", "--fine", "2", "--out", str(tmp_path)])
    assert code == 0
    (nc,) = tmp_path.glob("*.nc")
    (png,) = tmp_path.glob("*.png")
    assert nc.stem == png.stem and nc.stem.startswith("unet_lesions_")
    ds = validate(load(nc))
    assert ds.attrs["model"] == "unet" and ds.attrs["dataset"] == "lesions" and ds.attrs["intervention"] == "zero"
    assert ds.ate.shape == (12, 12) and int(ds.roi_height) == 16
    out = capsys.readouterr().out
    assert f"wrote {nc}" in out and f"{int(ds.forwards)} forward passes" in out


def test_explain_refuses_an_index_outside_the_test_split(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", "--index", "9999", "--intervention", "zero", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "pdcr-lab explain: error: --index 9999 is out of range: the test split has 48 images"
    assert list(tmp_path.iterdir()) == []
