"""pdcr_lab.defaults: the paper's and the working settings, and the Literal choices."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import pytest

from pdcr_lab.defaults import (
    HISTOGRAM_EDGES,
    PAPER,
    WORKING,
    ComponentUnit,
    Intervention,
    Mode,
    OutcomeName,
    Policy,
    Precision,
    check_literal,
    choices,
)


def test_paper_settings_are_the_published_ones_and_frozen():
    assert (PAPER.block, PAPER.coarse, PAPER.fine, PAPER.tau, PAPER.threshold) == (8, 3, 50, 0.02, 0.5)
    assert (PAPER.roi_size, PAPER.image_size, PAPER.bank_per_image) == (32, 256, 100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAPER.fine = 10


def test_working_settings_tile_the_embedded_images():
    assert WORKING.image_size % WORKING.block == 0 and WORKING.roi_size % WORKING.block == 0
    assert WORKING.image_size // WORKING.block == 12 and WORKING.coarse == PAPER.coarse


def test_histogram_edges_are_increasing_with_tau_inside():
    assert np.all(np.diff(HISTOGRAM_EDGES) > 0)
    assert (HISTOGRAM_EDGES[4], HISTOGRAM_EDGES[5]) == (-PAPER.tau, PAPER.tau)


def test_choices_lists_a_literal_in_order():
    assert choices(Mode) == ("paper", "adaptive")
    assert choices(Precision) == ("float32", "bfloat16", "float16")
    assert choices(Intervention) == ("natural", "zero", "mean", "blur")
    assert choices(Policy) == ("natural", "zero", "blur")
    assert choices(ComponentUnit) == ("module", "channels", "cells")
    assert choices(OutcomeName) == ("dice", "soft_dice", "iou", "probability")
    assert choices(Literal["x"]) == ("x",)
    with pytest.raises(TypeError, match=r"literal must be a typing.Literal, got <class 'str'>"):
        choices(str)


def test_check_literal_returns_the_value_or_names_the_argument():
    assert check_literal("mode", "adaptive", Mode) == "adaptive"
    with pytest.raises(ValueError, match=r"^mode='fast' is not supported; expected one of \['paper', 'adaptive'\]$"):
        check_literal("mode", "fast", Mode)
    with pytest.raises(ValueError, match=r"^unit=None is not supported"):
        check_literal("unit", None, ComponentUnit)
    with pytest.raises(ValueError, match=r"precision=32 is not supported"):
        check_literal("precision", 32, Precision)  # not a string, even if it looks like a choice
