"""How PdCR reads a model: input normalisation, output selection, activation and the explained class.

Any segmentation ``nn.Module`` can be explained without a wrapper class. The rules:

* **Input**: images are float in [0, 1], channels first. When the model expects normalised input,
  give ``normalize=(mean, std)`` (per channel); it is applied after the intervention, so natural
  blocks and zero blocks are composed in pixel space exactly as in the reference.
* **Output selection**: a tensor is used as is. A dict uses ``output_key`` if given, else the key
  ``"out"``, else its only tensor value. A tuple or list uses element ``output_key`` (default 0).
  The selected tensor must be (B, K, H, W) with the image's H and W.
* **Activation**: ``"auto"`` means none for one channel (the paper thresholds the model's score at
  0.5, i.e. the model ends in a sigmoid) and softmax over channels for K > 1. ``"sigmoid"`` is for
  one-channel logits, ``"softmax"``/``"none"`` force the choice.
* **Explained class**: one channel is the foreground. With K > 1 the class is ``class_index``
  (default 1 when K == 2, required otherwise): the binary prediction is ``argmax == class_index``
  and the probability is the softmax score of that class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .checks import as_tensor, check_choice, check_int, describe

__all__ = ["ModelAdapter", "Activation"]

Activation = Literal["auto", "none", "sigmoid", "softmax"]


@dataclass
class ModelAdapter:
    """Turns a model's raw output into the explained class's probability and binary mask.

    Parameters
    ----------
    model : torch.nn.Module
        The segmentation model; called on (B, C, H, W) images.
    output_key : str or int, optional
        Which part of a dict or tuple output is the segmentation (module notes); None: the
        default rule.
    activation : {"auto", "none", "sigmoid", "softmax"}
        How scores become the explained class's probability (module notes).
    class_index : int, optional
        Explained class of a multi-channel output (default 1 for two channels; required above).
    threshold : float
        A one-channel output is foreground where its probability exceeds this.
    normalize : (mean, std), optional
        Per-channel normalisation applied to the [0, 1] images before the model sees them.

    Examples
    --------
    >>> net = torch.nn.Conv2d(1, 2, 1)          # two-channel logits: softmax, class 1
    >>> adapter = ModelAdapter(net)
    >>> out = adapter.logits(torch.rand(3, 1, 8, 8))
    >>> adapter.check_output(out, (8, 8))
    >>> adapter.class_index, tuple(adapter.probability(out).shape), tuple(adapter.binary(out).shape)
    (1, (3, 8, 8), (3, 8, 8))
    """

    model: nn.Module
    output_key: str | int | None = None
    activation: Activation = "auto"
    class_index: int | None = None
    threshold: float = 0.5
    normalize: tuple[Sequence[float], Sequence[float]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {describe(self.model)}")
        check_choice("activation", self.activation, ("auto", "none", "sigmoid", "softmax"))
        if self.class_index is not None:
            self.class_index = check_int("class_index", self.class_index, minimum=0)
        self._mean = self._std = None
        if self.normalize is not None:
            try:
                mean, std = self.normalize
            except (TypeError, ValueError):
                raise ValueError(f"normalize must be a (mean, std) pair, got {self.normalize!r}") from None
            self._mean = as_tensor("normalize mean", mean).reshape(1, -1, 1, 1)
            self._std = as_tensor("normalize std", std).reshape(1, -1, 1, 1)
            if (self._std <= 0).any():
                raise ValueError(f"normalize std must be positive, got {list(std)}")
        self.n_classes: int | None = None

    # -- structure -----------------------------------------------------------------------------
    def expected_channels(self) -> int | None:
        """Input channels of the first convolution or linear layer, when the model has one."""
        for module in self.model.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                return int(module.in_channels)
            if isinstance(module, nn.Linear):
                return None  # token models may reshape first; cannot tell
        return None

    def device(self) -> torch.device:
        for tensor in [*self.model.parameters(), *self.model.buffers()]:
            return tensor.device
        return torch.device("cpu")

    # -- forward -------------------------------------------------------------------------------
    def logits(self, images: torch.Tensor, *, model: nn.Module | None = None) -> torch.Tensor:
        """Run the model on (B, C, H, W) images in [0, 1] and select its (B, K, H, W) output.

        Parameters
        ----------
        images : Tensor of shape (B, C, H, W)
            Pixel values in [0, 1]; normalised here when `normalize` is set.
        model : torch.nn.Module, optional
            Runs instead of ``self.model`` when given (a compiled copy of it, say).
        """
        if self._mean is not None:
            # (1, C, 1, 1) broadcast over a volume's extra axis too
            trailing = [1] * (images.dim() - 4)
            mean = self._mean.reshape(*self._mean.shape, *trailing).to(images.device, images.dtype)
            std = self._std.reshape(*self._std.shape, *trailing).to(images.device, images.dtype)
            images = (images - mean) / std
        return self._select((self.model if model is None else model)(images))

    def _select(self, out: Any) -> torch.Tensor:
        if isinstance(out, Mapping):
            if self.output_key is not None:
                if self.output_key not in out:
                    raise KeyError(f"output_key={self.output_key!r} not in the model's output keys {list(out)}")
                out = out[self.output_key]
            elif "out" in out:
                out = out["out"]
            else:
                tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
                if len(tensors) != 1:
                    raise ValueError(
                        f"the model returns a dict with keys {list(out)}; pass output_key to choose one"
                    )
                out = out[tensors[0]]
        elif isinstance(out, (tuple, list)):
            index = 0 if self.output_key is None else self.output_key
            if not isinstance(index, int) or not -len(out) <= index < len(out):
                raise ValueError(
                    f"output_key={self.output_key!r} does not select an element of the model's "
                    f"{type(out).__name__} of length {len(out)}"
                )
            out = out[index]
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the model's selected output must be a tensor, got {describe(out)}")
        if out.ndim not in (4, 5):
            raise ValueError(f"the model's output must have shape (B, K, H, W) (or (B, K, D, H, W) for a volume), "
                             f"got {describe(out)}")
        return out

    def check_output(self, out: torch.Tensor, image_shape: tuple[int, int]) -> None:
        """Validate the factual output once: spatial size and the class index.

        Sets ``n_classes`` and, for a two-channel output without `class_index`, the class 1.

        Parameters
        ----------
        out : Tensor of shape (B, K, H, W)
            The selected output of :meth:`logits` on the factual image.
        image_shape : (int, int) or (int, int, int)
            The image's (H, W) (or a volume's (D, H, W)); the output must match it.
        """
        if tuple(out.shape[2:]) != tuple(image_shape):
            raise ValueError(
                f"the model's output has spatial size {tuple(out.shape[2:])} but the image is "
                f"{tuple(image_shape)}; PdCR needs a per-pixel output of the image's size"
            )
        k = int(out.shape[1])
        self.n_classes = k
        if k == 1:
            if self.class_index not in (None, 0):
                raise ValueError(f"class_index={self.class_index} is out of range for a one-channel output")
            if self.activation == "softmax":
                raise ValueError("activation='softmax' needs an output with more than one channel")
        else:
            if self.class_index is None:
                if k != 2:
                    raise ValueError(f"the model outputs {k} channels; pass class_index (0..{k - 1})")
                self.class_index = 1
            if not 0 <= self.class_index < k:
                raise ValueError(f"class_index={self.class_index} is out of range for {k} output channels (0..{k - 1})")

    def probability(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, W) score of the explained class.

        Parameters
        ----------
        out : Tensor of shape (B, K, H, W)
            Output of :meth:`logits`.
        """
        k = out.shape[1]
        act = self.activation
        if act == "auto":
            act = "none" if k == 1 else "softmax"
        if k == 1:
            score = out[:, 0]
            return torch.sigmoid(score) if act == "sigmoid" else score
        if act == "softmax":
            return torch.softmax(out, dim=1)[:, self.class_index]
        if act == "sigmoid":
            return torch.sigmoid(out[:, self.class_index])
        return out[:, self.class_index]

    def binary(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, W) binary prediction of the explained class, as float 0/1.

        Parameters
        ----------
        out : Tensor of shape (B, K, H, W)
            Output of :meth:`logits`; one channel is thresholded, several are arg-maxed.
        """
        if out.shape[1] == 1:
            return (self.probability(out) > self.threshold).to(out.dtype)
        return (out.argmax(dim=1) == self.class_index).to(out.dtype)

    def prediction(self, out: torch.Tensor, needs: str) -> torch.Tensor:
        """What an outcome reduces: :meth:`binary` or :meth:`probability` of `out`.

        Parameters
        ----------
        out : Tensor of shape (B, K, H, W)
            Output of :meth:`logits`.
        needs : {"binary", "probability"}
            The outcome's ``needs`` (:class:`pdcr_lab.outcomes.Outcome`).
        """
        return self.binary(out) if needs == "binary" else self.probability(out)
