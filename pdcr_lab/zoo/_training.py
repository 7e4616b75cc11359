"""Training loop and metrics of the zoo (CPU, deterministic from a seed)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._base import ZooModel
from ._registry import Training

THRESHOLD = 0.5


class SegmentationSplits(Protocol):
    """What training needs from a dataset (``pdcr_lab.datasets.load`` returns one)."""

    def images(self, split: str) -> torch.Tensor:
        """(N, C, H, W) float32 images in [0, 1] ((N, C, D, H, W) volumes for a 3-D model).

        Parameters
        ----------
        split : str
            ``"train"``, ``"val"`` or ``"test"``.
        """
        ...

    def masks(self, split: str) -> torch.Tensor:
        """(N, H, W) bool masks ((N, D, H, W) for volumes).

        Parameters
        ----------
        split : str
            ``"train"``, ``"val"`` or ``"test"``.
        """
        ...


@contextmanager
def num_threads(threads: int) -> Iterator[None]:
    """Temporarily set ``torch.set_num_threads``.

    Parameters
    ----------
    threads : int
        Threads inside the ``with`` block; the previous number is restored on exit.

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with num_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def dice_iou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of boolean masks of shape (N, H, W) (or per volume, (N, D, H, W)).

    An image where both the prediction and the ground truth are empty scores 1 (perfect agreement).

    Parameters
    ----------
    pred : bool Tensor (N, H, W) or (N, D, H, W)
        Predicted masks.
    target : bool Tensor, same shape
        Ground truth.

    Examples
    --------
    >>> pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    >>> target = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    >>> [v.tolist() for v in dice_iou(pred, target)]
    [[0.6666666666666666, 1.0], [0.5, 1.0]]
    """
    pred, target = pred.flatten(1).bool(), target.flatten(1).bool()
    inter = (pred & target).sum(1).double()
    total = pred.sum(1).double() + target.sum(1).double()
    union = total - inter
    empty = total == 0
    dice = torch.where(empty, 1.0, 2 * inter / total.clamp(min=1))
    iou = torch.where(empty, 1.0, inter / union.clamp(min=1))
    return dice, iou


@torch.no_grad()
def predict(model: ZooModel, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Foreground probabilities (N, H, W) (or (N, D, H, W)) of an eval-mode ``model``.

    Parameters
    ----------
    model : ZooModel
        Run in eval mode; its train/eval mode is restored afterwards.
    images : Tensor (N, C, H, W) or (N, C, D, H, W)
        Images (or volumes) in [0, 1].
    batch_size : int
        Images per forward pass.
    """
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x)[:, 0] for x in images.split(batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: ZooModel, images: torch.Tensor, masks: torch.Tensor) -> dict[str, Any]:
    """Mean Dice / IoU at threshold 0.5 (Dice per image, then averaged) and the per-image Dice.

    Parameters
    ----------
    model : ZooModel
        The model to score.
    images : Tensor (N, C, H, W) or (N, C, D, H, W)
        Images (or volumes) in [0, 1].
    masks : bool Tensor (N, H, W) or (N, D, H, W)
        Their ground truth.

    Returns
    -------
    dict
        ``dice``, ``iou`` (floats) and ``per_image_dice`` (list).
    """
    dice, iou = dice_iou(predict(model, images) > THRESHOLD, masks)
    return {"dice": float(dice.mean()), "iou": float(iou.mean()), "per_image_dice": dice.tolist()}


def loss_fn(logits: torch.Tensor, target: torch.Tensor, training: Training) -> torch.Tensor:
    """``bce_weight * BCE + dice_weight * (1 - soft Dice)``, the soft Dice taken per image.

    Parameters
    ----------
    logits : Tensor (B, 1, H, W) or (B, 1, D, H, W)
        The model's pre-sigmoid scores.
    target : Tensor, same shape
        Ground truth as float 0/1.
    training : Training
        Gives the two weights.

    Examples
    --------
    >>> perfect = torch.full((1, 1, 2, 2), 20.0)               # confident foreground everywhere
    >>> round(float(loss_fn(perfect, torch.ones(1, 1, 2, 2), Training())), 4)
    0.0
    """
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    soft = (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
    return training.bce_weight * bce + training.dice_weight * (1 - soft).mean()


def _flip(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips along every spatial axis (x, y, then z for volumes), drawn per image from ``gen``."""
    for dim in range(-1, 1 - x.ndim, -1):  # (-1, -2) for images: the 2-D draws stay as they were
        pick = (torch.rand(len(x), generator=gen) < 0.5).view(-1, *(1,) * (x.ndim - 1))
        x = torch.where(pick, x.flip(dim), x)
        y = torch.where(pick, y.flip(dim), y)
    return x, y


def _schedule(training: Training, steps_per_epoch: int) -> Any:
    warm, total = training.warmup * steps_per_epoch, training.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


def fit(model: ZooModel, data: SegmentationSplits, training: Training, *, seed: int = 0,
        progress: bool = True, desc: str = "") -> dict[str, Any]:
    """Train ``model`` in place with early stopping on the validation Dice; keep the best weights.

    The data order and the flips come from a ``torch.Generator`` seeded with ``seed``; the test
    split is never looked at. Returns the training history.

    Parameters
    ----------
    model : ZooModel
        Trained in place; it ends in eval mode with the best validation weights.
    data : SegmentationSplits
        Gives the ``train`` and ``val`` splits.
    training : Training
        Hyper-parameters.
    seed : int
        Seed of the data order and the flips (the initialisation is the caller's).
    progress : bool
        Show a tqdm progress bar.
    desc : str
        Label of the progress bar.

    Returns
    -------
    dict
        ``best_epoch``, ``epochs_run``, ``best_val_dice``, ``history`` (one dict per epoch) and
        ``train_seconds``.
    """
    x_train, y_train = data.images("train"), data.masks("train").float().unsqueeze(1)
    x_val, y_val = data.images("val"), data.masks("val")
    gen = torch.Generator().manual_seed(seed)
    passes = max(1, math.ceil(training.min_epoch_images / max(1, len(x_train))))
    steps = math.ceil(passes * len(x_train) / training.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(training, steps))
    best = {"dice": -1.0, "epoch": -1, "state": None}
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(training.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        losses = []
        order = torch.cat([torch.randperm(len(x_train), generator=gen) for _ in range(passes)])
        for idx in order.split(training.batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            x, y = _flip(x_train[idx], y_train[idx], gen)
            loss = loss_fn(model.logits(x), y, training)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if training.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        val = evaluate(model, x_val, y_val)["dice"]
        history.append({"epoch": epoch, "loss": sum(losses) / max(1, len(losses)), "val_dice": val})
        if val > best["dice"]:
            best = {"dice": val, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{val:.3f}", best=f"{best['dice']:.3f}")
        if epoch - best["epoch"] >= training.patience or not math.isfinite(history[-1]["loss"]):
            break  # early stop (a diverged run also stops; the best weights are kept either way)
    bar.close()
    model.load_state_dict(best["state"])
    model.eval()
    return {"best_epoch": best["epoch"], "epochs_run": len(history), "best_val_dice": best["dice"],
            "history": history, "train_seconds": time.perf_counter() - start}


#: Side of the images (or volumes) :func:`throughput` times by default, by spatial dimensions.
THROUGHPUT_SIZE = {2: 96, 3: 32}


@torch.no_grad()
def throughput(model: ZooModel, *, batch: int = 32, size: int | None = None, threads: int = 2,
               repeats: int = 5) -> float:
    """Forward throughput in images/s (volumes/s for a 3-D model): median of ``repeats`` timed
    batches, after one warm-up.

    Parameters
    ----------
    model : ZooModel
        The model (put in eval mode).
    batch : int
        Images per timed forward pass.
    size : int, optional
        Side in pixels (voxels) of the square images or cubic volumes (default: 96 for images,
        32 for volumes, :data:`THROUGHPUT_SIZE`).
    threads : int
        CPU threads during the measurement.
    repeats : int
        Timed batches.
    """
    dims = getattr(model, "spatial_dims", 2)
    side = THROUGHPUT_SIZE[dims] if size is None else size
    x = torch.rand(batch, getattr(model, "channels", 3), *(side,) * dims, generator=torch.Generator().manual_seed(0))
    model.eval()
    times = []
    with num_threads(threads):
        model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return batch / sorted(times)[len(times) // 2]
