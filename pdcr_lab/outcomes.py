"""Outcomes: the RoI state M that PdCR's treatment effect is measured on (docs/method.md section 2).

An outcome maps a batch of predictions, the reference mask and one or more RoI masks to one number
per (prediction, RoI). All outcomes are computed on the device in one batched reduction.
New outcomes subclass :class:`Outcome` and are added with :func:`register_outcome`.

Without ground truth the reference is the model's own factual prediction, so ``dice`` and ``iou``
start at M0 = 100 and a block can only lower them: such maps show support, never harm. ``soft_dice``
and ``probability`` move both ways there (each class's ``question`` says what it measures).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from .checks import check_choice

__all__ = ["Outcome", "Dice", "SoftDice", "IoU", "Probability", "OUTCOMES", "get_outcome", "register_outcome"]

EPS = 1e-10  # the reference's smoothing constant; keeps an empty RoI at 0 instead of NaN


class Outcome:
    """Base class of RoI outcomes.

    Subclasses set ``name``, ``units``, ``needs`` ("binary": the thresholded prediction, or
    "probability": the score of the explained class), ``question`` (one line: what the outcome
    asks of the RoI, for the CLI and the docs) and implement :meth:`reduce`. An outcome that does
    not compare the prediction with the reference mask sets ``uses_reference = False`` and
    overrides :meth:`__call__` (see :class:`Probability`).
    """

    name: ClassVar[str]
    units: ClassVar[str]
    needs: ClassVar[Literal["binary", "probability"]]
    #: The question the outcome answers about the RoI; empty when a registered outcome does not say.
    question: ClassVar[str] = ""
    #: The outcome compares the prediction with the reference mask (ground truth or the factual
    #: prediction): :class:`pdcr_lab.call.RoiOutcome` then warns when M0 is meaningless.
    uses_reference: ClassVar[bool] = True

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Outcome of each prediction in each RoI.

        Parameters
        ----------
        pred : Tensor of shape (B, H, W)
            Binary (0/1) or probability predictions, float.
        target : Tensor of shape (H, W)
            Reference mask, float 0/1.
        rois : Tensor of shape (R, H, W)
            RoI masks, float 0/1.

        Returns
        -------
        Tensor of shape (B, R)
        """
        rois = rois.to(pred.dtype)
        target = target.to(pred.dtype)
        gm = rois * target  # (R, H, W)
        flat, flat_rois, flat_gm = _flat(pred), _flat(rois), _flat(gm)  # volumes too: any spatial rank
        inter = torch.einsum("bp,rp->br", flat, flat_gm)
        pred_sum = torch.einsum("bp,rp->br", flat, flat_rois)
        target_sum = flat_gm.sum(dim=1)
        return self.reduce(inter, pred_sum, target_sum[None, :])

    def reduce(self, inter: torch.Tensor, pred_sum: torch.Tensor, target_sum: torch.Tensor) -> torch.Tensor:
        """The outcome from the three sums over each RoI; subclasses implement it.

        Parameters
        ----------
        inter : Tensor of shape (B, R)
            sum(p g) inside each RoI.
        pred_sum : Tensor of shape (B, R)
            sum(p) inside each RoI.
        target_sum : Tensor of shape (1, R)
            sum(g) inside each RoI.

        Returns
        -------
        Tensor of shape (B, R)
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Dice(Outcome):
    """100 x DSC of the binarised prediction inside the RoI (the paper's outcome).

    DSC = 2 sum(p g) / (sum(p) + sum(g) + 1e-10); an RoI with neither prediction nor target is 0.

    Examples
    --------
    >>> pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])      # one prediction, 2 x 2 pixels
    >>> target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    >>> rois = torch.ones(1, 2, 2)                            # one RoI: every pixel
    >>> Dice()(pred, target, rois)                            # 2 * 1 / (2 + 1)
    tensor([[66.6667]])
    >>> IoU()(pred, target, rois)
    tensor([[50.]])
    """

    name = "dice"
    units = "DSC points"
    needs = "binary"
    question = ("how well does the prediction inside the RoI match the reference "
                "(ground truth, or the model's own factual prediction)?")

    def reduce(self, inter, pred_sum, target_sum):
        return 100.0 * 2.0 * inter / (pred_sum + target_sum + EPS)


class SoftDice(Dice):
    """100 x soft DSC: the Dice formula on the class probability instead of the binarised mask.

    Smooth in the model output, so it also registers changes that do not flip a pixel. Against
    ground truth it asks how well the probabilities match it. Without ground truth (the reference
    is the factual binary prediction) it asks how firmly the model holds on to its own segmentation
    of the RoI: M0 < 100 unless every probability is exactly 0 or 1, so a block can raise it (the
    model grows surer of what it predicted) or lower it, and the map can show harm as well as support.

    Examples
    --------
    >>> prob = torch.tensor([[[0.8, 0.6], [0.2, 0.0]]])
    >>> own = (prob[0] > 0.5).float()                          # the factual prediction as reference
    >>> SoftDice()(prob, own, torch.ones(1, 2, 2))            # 2 * 1.4 / (1.6 + 2)
    tensor([[77.7778]])
    """

    name = "soft_dice"
    needs = "probability"
    question = ("how closely does the class probability inside the RoI match the reference "
                "(without ground truth: how firmly does the model hold on to its own prediction)?")


class IoU(Outcome):
    """100 x IoU (Jaccard) of the binarised prediction inside the RoI."""

    name = "iou"
    units = "IoU points"
    needs = "binary"
    question = ("how much does the prediction inside the RoI overlap the reference "
                "(ground truth, or the model's own factual prediction)?")

    def reduce(self, inter, pred_sum, target_sum):
        return 100.0 * inter / (pred_sum + target_sum - inter + EPS)


class Probability(Outcome):
    """100 x the mean probability of the explained class over the RoI's pixels.

    It answers "does this block make the model more or less confident that the RoI is foreground?".
    Independent of the reference mask (ground truth or not), so it moves both ways in every mode:
    ATE < 0 means the original block makes the model more confident, ATE > 0 less confident. It
    reads the class score as the adapter gives it: the softmax or sigmoid probability, or the raw
    output with ``activation="none"`` (a one-channel model's default, read as a probability).

    Examples
    --------
    >>> prob = torch.tensor([[[0.75, 0.5], [0.25, 0.0]],
    ...                      [[1.0, 1.0], [1.0, 1.0]]])        # two predictions, 2 x 2 pixels
    >>> rois = torch.tensor([[[1.0, 1.0], [1.0, 1.0]],
    ...                      [[1.0, 1.0], [0.0, 0.0]]])        # every pixel; the top row
    >>> Probability()(prob, torch.zeros(2, 2), rois)          # the reference is ignored
    tensor([[ 37.5000,  62.5000],
            [100.0000, 100.0000]])
    """

    name = "probability"
    units = "probability points"
    needs = "probability"
    question = "does this block make the model more or less confident that the RoI is foreground?"
    uses_reference = False

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Mean score of each prediction over each RoI, in points (`target` is not read).

        Parameters
        ----------
        pred : Tensor of shape (B, H, W)
            Probability of the explained class, float.
        target : Tensor of shape (H, W)
            Reference mask; ignored (kept for the :class:`Outcome` signature).
        rois : Tensor of shape (R, H, W)
            RoI masks, float 0/1.

        Returns
        -------
        Tensor of shape (B, R)
        """
        rois = _flat(rois.to(pred.dtype))
        total = torch.einsum("bp,rp->br", _flat(pred), rois)
        # parse_rois refuses empty RoIs; the clamp only keeps a hand-built one at 0 instead of NaN
        area = rois.sum(dim=1).clamp_min(1.0)
        return 100.0 * total / area[None, :]


OUTCOMES: dict[str, Outcome] = {o.name: o for o in (Dice(), SoftDice(), IoU(), Probability())}


def _flat(values: torch.Tensor) -> torch.Tensor:
    """(N, *spatial) -> (N, pixels): outcomes sum over pixels of images and voxels of volumes alike."""
    return values.reshape(values.shape[0], -1)


def register_outcome(outcome: Outcome) -> Outcome:
    """Make an outcome available by name in :func:`pdcr_lab.explain`.

    Parameters
    ----------
    outcome : Outcome
        An instance of an :class:`Outcome` subclass; its ``name`` becomes the key (an existing
        outcome of that name is replaced).

    Examples
    --------
    >>> class Recall(Outcome):
    ...     name, units, needs = "recall", "recall points", "binary"
    ...     def reduce(self, inter, pred_sum, target_sum):
    ...         return 100.0 * inter / (target_sum + EPS)
    >>> register_outcome(Recall())
    Recall()
    >>> get_outcome("recall").units
    'recall points'
    >>> del OUTCOMES["recall"]                                # keep the registry as it was
    """
    if not isinstance(outcome, Outcome):
        raise TypeError(f"outcome must be an Outcome instance, got {outcome!r}")
    OUTCOMES[outcome.name] = outcome
    return outcome


def get_outcome(outcome: str | Outcome) -> Outcome:
    """Resolve an outcome name (or pass an instance through).

    Parameters
    ----------
    outcome : str or Outcome
        A registered name (:data:`OUTCOMES`: ``"dice"``, ``"soft_dice"``, ``"iou"``,
        ``"probability"``, ...) or an instance.

    Examples
    --------
    >>> get_outcome("soft_dice"), get_outcome("soft_dice").needs
    (SoftDice(), 'probability')
    """
    if isinstance(outcome, Outcome):
        return outcome
    return OUTCOMES[check_choice("outcome", outcome, OUTCOMES)]
