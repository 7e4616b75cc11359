"""pdcr_lab.checks: the argument checks behind the public boundary. Each message names the argument,
echoes the value and says what was expected; the explain cases pin that wording where users meet it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdcr_lab.checks import as_image, as_mask, as_tensor, check_choice, check_float, check_int, describe


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"target": np.zeros((16, 16))}, ValueError, r"target must have shape \(32, 32\)"),
        ({"target": np.full((32, 32), 3)}, ValueError, r"target must be binary"),
        ({"block": 0}, ValueError, r"block=0 is too small"),
        ({"intervention": "gaussian"}, ValueError, r"intervention='gaussian' is not supported; expected one of"),
        ({"outcome": "hausdorff"}, ValueError, r"outcome='hausdorff' is not supported"),
        ({"fine": 0}, ValueError, r"fine=0 is too small"),
        ({"tau": -1}, ValueError, r"tau=-1.0 is too small"),
        ({"tau": float("nan")}, ValueError, r"tau=nan must be finite"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer"),
        ({"batch_size": 0}, ValueError, r"batch_size=0 is too small"),
        ({"activation": "relu"}, ValueError, r"activation='relu' is not supported"),
    ],
)
def test_bad_arguments_of_explain(tiny_net, image, quick_explain, kwargs, error, match):
    with pytest.raises(error, match=match):
        quick_explain(tiny_net, image, **kwargs)


def test_wrong_image_rank(tiny_net, image, quick_explain):
    with pytest.raises(ValueError, match=r"image must have shape \(C, H, W\), got tensor of shape \(1, 3, 32, 32\)"):
        quick_explain(tiny_net, image[None])


def test_nan_in_image(tiny_net, image, quick_explain):
    image = image.clone()
    image[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"image contains 1 NaN or Inf values"):
        quick_explain(tiny_net, image)


# -- the helpers themselves ------------------------------------------------------------------------


def test_describe_gives_shapes_of_arrays_and_short_reprs():
    assert describe(torch.zeros(2, 3)) == "tensor of shape (2, 3) and dtype torch.float32"
    assert describe(np.zeros((4,), np.int16)) == "array of shape (4,) and dtype int16"
    assert describe("x" * 200).endswith("...") and len(describe("x" * 200)) == 80
    assert describe(None) == "None"


def test_check_choice_returns_the_value_or_lists_the_choices():
    assert check_choice("mode", "paper", ("paper", "adaptive")) == "paper"
    with pytest.raises(ValueError, match=r"^mode='fast' is not supported; expected one of \['paper', 'adaptive'\]$"):
        check_choice("mode", "fast", ("paper", "adaptive"))


def test_check_int_refuses_bools_floats_and_small_values():
    assert check_int("n", np.int64(3), minimum=0) == 3 and type(check_int("n", np.int64(3))) is int
    with pytest.raises(TypeError, match=r"n must be an integer, got True"):
        check_int("n", True)
    with pytest.raises(TypeError, match=r"n must be an integer, got 2.0"):
        check_int("n", 2.0)
    with pytest.raises(ValueError, match=r"n=-1 is too small; expected an integer >= 0"):
        check_int("n", -1, minimum=0)


def test_check_float_accepts_integers_and_refuses_infinities():
    assert check_float("tau", 1) == 1.0 and isinstance(check_float("tau", np.float32(0.5)), float)
    with pytest.raises(ValueError, match=r"tau=inf must be finite"):
        check_float("tau", float("inf"))
    with pytest.raises(TypeError, match=r"tau must be a number, got '0.1'"):
        check_float("tau", "0.1")
    with pytest.raises(TypeError, match=r"tau must be a number, got False"):
        check_float("tau", False)


def test_as_tensor_converts_arrays_and_refuses_non_numbers():
    out = as_tensor("x", np.arange(4, dtype=np.int64).reshape(2, 2))
    assert out.dtype == torch.float32 and out.tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert as_tensor("x", [True, False], dtype=torch.bool).tolist() == [True, False]
    with pytest.raises(TypeError, match=r"x must be a numeric tensor or array, got \['a', 'b'\]"):
        as_tensor("x", ["a", "b"])


def test_as_image_requires_three_dims_and_finite_values():
    assert tuple(as_image("img", np.zeros((1, 4, 4))).shape) == (1, 4, 4)
    with pytest.raises(ValueError, match=r"img must have shape \(C, H, W\), got array of shape \(4, 4\)"):
        as_image("img", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"img contains 2 NaN or Inf values"):
        as_image("img", np.array([[[np.inf, np.nan, 0.0]]]))


def test_as_mask_accepts_bool_01_and_0_255_and_a_channel_axis():
    expected = [[True, False], [False, True]]
    for value in (np.array(expected), np.array([[1, 0], [0, 1]]), np.array([[255, 0], [0, 255]], np.uint8)):
        assert as_mask("m", value, (2, 2)).tolist() == expected
    assert as_mask("m", torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), (2, 2)).tolist() == expected
    with pytest.raises(ValueError, match=r"m must have shape \(3, 3\) \(the image's H, W\)"):
        as_mask("m", np.ones((2, 2)), (3, 3))
    with pytest.raises(ValueError, match=r"m must be binary \(bool, 0/1 or 0/255\), found values \[0.0, 0.5\]"):
        as_mask("m", np.array([[0.0, 0.5], [0.0, 0.0]]), (2, 2))
