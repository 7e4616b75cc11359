"""Seg-Grad-CAM (Vinogradova, Dibrov and Myers, AAAI 2020): Grad-CAM with an RoI-summed score.

For feature maps A^k (k = 1..K) of a chosen layer and the score y = sum over the RoI pixels of the
explained class's logit,

    alpha_k = mean over (h, w) of dy / dA^k,      cam = sum_k alpha_k A^k      (signed, h x w)

upsampled bilinearly to the image (``cam_signed``) and, as in Grad-CAM, passed through a ReLU
(``cam``). The block map is the mean of the pixel map over each b x b block, on PdCR's grid.
Positive values SUPPORT the RoI's score (``support_sign = +1``): the ranking used by the
faithfulness metrics is "largest first".
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from ..checks import check_choice, describe
from ..adapters import ModelAdapter
from ..call import RoiOutcome, block_means, finish, gradients, prepare, shared_doc

__all__ = ["gradcam", "feature_layers"]


class _LogitView(nn.Module):
    """A model's ``logits`` method as a module, so the adapter reads pre-sigmoid scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.logits(x)


def feature_layers(
    model: nn.Module, image: torch.Tensor, adapter: ModelAdapter | None = None
) -> dict[str, tuple[int, ...]]:
    """Modules whose output is a (1, C, h, w) feature map on `image`, in the order they finish.

    Returns ``{module path: (C, h, w)}``; these are the layers Seg-Grad-CAM can use.

    Parameters
    ----------
    model : torch.nn.Module
        The model (run once on `image`, no gradients).
    image : Tensor (C, H, W)
        An input image.
    adapter : ModelAdapter, optional
        How the model is read (default: :class:`pdcr_lab.adapters.ModelAdapter` of `model`).

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.baselines import feature_layers
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.MaxPool2d(2), torch.nn.Conv2d(2, 1, 1))
    >>> feature_layers(net, torch.rand(1, 8, 8))
    {'0': (2, 8, 8), '1': (2, 4, 4), '2': (1, 4, 4)}
    """
    adapter = adapter or ModelAdapter(model)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                shapes.pop(name, None)  # a module called twice keeps its last position
                shapes[name] = tuple(output.shape[1:])

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            adapter.logits(image.unsqueeze(0))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _default_layer(model: nn.Module, layers: dict[str, tuple[int, ...]]) -> str:
    """The bottleneck, the layer Seg-Grad-CAM was shown on.

    A model that lists its stages (``model.stages() -> {path: role}``, the zoo's contract) gives it
    by the role ``"bottleneck"`` (the last one with a 4-D output). Otherwise: the last module, in
    forward order, with the smallest spatial output of at least 2 x 2; 1 x 1 outputs (global
    pooling) are skipped because their CAM is a constant.
    """
    stages = getattr(model, "stages", None)
    if callable(stages):
        try:
            roles = dict(stages())
        except Exception:  # noqa: BLE001 - a model's own helper failing only loses the hint
            roles = {}
        marked = [path for path, role in roles.items() if role == "bottleneck" and path in layers]
        if marked:
            return marked[-1]
    usable = {n: s for n, s in layers.items() if s[1] >= 2 and s[2] >= 2}
    if not usable:
        raise ValueError(
            f"the model has no layer with a (B, C, h, w) output of at least 2x2; layers seen: {list(layers)}"
        )
    smallest = min(s[1] * s[2] for s in usable.values())
    return [n for n, s in usable.items() if s[1] * s[2] == smallest][-1]


def _check_layer(model: nn.Module, layer: str, layers: dict[str, tuple[int, ...]]) -> None:
    listing = list(layers)
    shown = listing if len(listing) <= 40 else [*listing[:20], "...", *listing[-19:]]
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module path (str) or None, got {describe(layer)}")
    names = dict(model.named_modules())
    if layer not in names or not layer:
        raise ValueError(
            f"layer={layer!r} is not a module of the model; available layers (with a (B, C, h, w) output): {shown}"
        )
    if layer not in layers:
        raise ValueError(
            f"layer={layer!r} does not output a (B, C, h, w) feature map on this image (or is never called); "
            f"available layers: {shown}"
        )


def _score_reader(call_adapter: ModelAdapter, model: nn.Module, score: str, k: int) -> tuple[Any, str]:
    """A function images -> (B, H, W) explained-class score, and a description for the attrs."""
    if score == "probability":
        return (lambda x: call_adapter.probability(call_adapter.logits(x))), "probability"
    if k > 1:  # pre-softmax logit of the class, as in Seg-Grad-CAM
        return (lambda x: call_adapter.logits(x)[:, call_adapter.class_index]), "logit (output channel)"
    if call_adapter.activation == "sigmoid":
        return (lambda x: call_adapter.logits(x)[:, 0]), "logit (output)"
    if callable(getattr(model, "logits", None)):
        view = ModelAdapter(_LogitView(model), call_adapter.output_key, "none", None, 0.5, call_adapter.normalize)
        return (lambda x: view.logits(x)[:, 0]), "logit (model.logits)"

    def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
        p = call_adapter.probability(call_adapter.logits(x)).clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)

    return inverse_sigmoid, "logit (inverse sigmoid of the output)"


@shared_doc
def gradcam(
    model: nn.Module,
    image: Any,
    *,
    roi: Any,
    target: Any = None,
    layer: str | None = None,
    relu: bool = True,
    score: str = "logit",
    seed: int = 0,
    device: str | torch.device | None = None,
    **reading: Any,
) -> xr.Dataset:
    """Seg-Grad-CAM map of the RoI on PdCR's block grid.

    Parameters
    ----------
    model : torch.nn.Module
        A differentiable segmentation model (see :func:`pdcr_lab.explain`).
    image : Tensor or array (C, H, W)
        Float pixel values in [0, 1].
    roi : box, mask or list of them
        As in :func:`pdcr_lab.explain`; several RoIs share one forward pass (one backward each).
    target : array (H, W), optional
        Ground truth; only the recorded ``m0`` depends on it.
    layer : str, optional
        Module path (``model.get_submodule(layer)``) whose output A is used. None: the bottleneck,
        read from ``model.stages()`` when the model has it (zoo models), else the last module with
        the smallest spatial output of at least 2 x 2. The chosen path is in ``attrs["layer"]``.
    relu : bool
        ``ate`` holds the block means of ReLU(cam) (Grad-CAM) if True, of the signed cam if False.
        Both pixel maps are always kept (``cam``, ``cam_signed``).
    score : {"logit", "probability"}
        What is summed over the RoI. "logit": the class logit (Seg-Grad-CAM). For a one-channel
        probability output the logit is read from ``model.logits(x)`` when the model has that
        method (pdcr_lab zoo models do), else as log(p / (1 - p)) with p clipped to [1e-6, 1 - 1e-6]
        (saturated pixels then give no gradient). The choice is recorded in ``attrs["score"]``.
    {shared}

    Returns
    -------
    xarray.Dataset
        The effects schema; ``ate`` in Grad-CAM units (arbitrary), positive = supports
        (``attrs["support_sign"] = 1``), RoI blocks 0; pixel maps ``cam`` and ``cam_signed``.

    Raises
    ------
    ValueError
        If `layer` is not a module with a (B, C, h, w) output (the message lists the available
        ones), or if the model is not differentiable (the message gives the reason).

    References
    ----------
    Vinogradova, Dibrov and Myers, "Towards interpretable semantic segmentation via gradient-weighted
    class activation mapping", AAAI 2020.
    """
    call = prepare(model, image, roi=roi, target=target, seed=seed, device=device, caller="gradcam", **reading)
    check_choice("score", score, ("logit", "probability"))
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be True or False, got {describe(relu)}")
    h, w = call.image.shape[1:]
    with gradients(model, call.device):
        state = RoiOutcome(call)
        layers = feature_layers(model, state.image, call.adapter)
        chosen = _default_layer(model, layers) if layer is None else layer
        _check_layer(model, chosen, layers)
        read, score_name = _score_reader(call.adapter, model, score, call.adapter.n_classes or 1)
        captured: list[torch.Tensor] = []
        hook = model.get_submodule(chosen).register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            x = state.image.unsqueeze(0).clone().requires_grad_(True)
            scores = read(x)[0]
        finally:
            hook.remove()
        if not scores.requires_grad:
            raise ValueError(
                "the model is not differentiable: its output carries no gradient (no grad_fn); it may run "
                "under torch.no_grad(), detach its output or threshold it. Seg-Grad-CAM needs d score / d A"
            )
        features = captured[-1]
        signed = []
        for r in range(len(call.rois)):
            roi_score = (scores * state.rois[r]).sum()
            (grad,) = torch.autograd.grad(roi_score, features, retain_graph=True, allow_unused=True)
            if grad is None:
                raise ValueError(
                    f"the model is not differentiable from layer {chosen!r} to its output: the RoI score "
                    "does not depend on that layer's output through autograd"
                )
            alpha = grad.mean(dim=(2, 3), keepdim=True)
            cam = (alpha * features).sum(dim=1, keepdim=True).detach()
            signed.append(F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[0, 0].cpu())
        m0 = state.m0
    cam_signed = torch.stack(signed).double()
    cam_relu = cam_signed.clamp(min=0)
    kept = cam_relu if relu else cam_signed
    return finish(
        call,
        method="gradcam" if relu else "gradcam_signed",
        block_map=block_means(kept, call.block),
        m0=m0,
        forwards=state.forwards + 2,  # + the layer probe and the differentiated pass
        support_sign=1,
        units="Grad-CAM (arbitrary units)",
        pixel_maps={"cam": cam_relu.numpy(), "cam_signed": cam_signed.numpy()},
        attrs={"layer": chosen, "relu": relu, "score": score_name},
    )
