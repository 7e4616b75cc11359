"""Planted-cause tasks: the correct RoI segmentation depends, by construction, on a distant marker.

Two generated tasks on 64 x 64 RGB images (block 8, an 8 x 8 grid), with a grey textured background:

* ``gate``: one bright blob near the centre and, with probability 1/2, a red 8 x 8 marker in one
  of the four corner blocks. The blob is foreground **iff the marker is present**. A blue 8 x 8
  distractor always sits in another corner block (the model must tell colours apart).
* ``switch``: two blobs (left, right) and a 16 x 16 marker (2 x 2 blocks) in the top block rows,
  red or green: red -> the left blob is foreground, green -> the right one. A blue 16 x 16 distractor
  sits in the bottom rows. The marker spans four blocks, so no single block decides the answer
  (redundancy: one-block interventions see a weaker effect than the marker has).

The planted cause of an RoI on a foreground blob is the marker. Attribution accuracy of a map on the
block grid (:func:`attribution_accuracy`): scores |ate| over the blocks, positives = blocks
overlapping the marker, negatives = blocks that overlap neither the marker, a blob nor the RoI (blob
blocks are left out: the blob's own context legitimately matters and is not part of the planted
truth). Reported as AUROC (:func:`auroc`, ties count 1/2) and AUPRC (:func:`average_precision`,
ties count against the method).

Models: :class:`PlantedNet` (a small U-Net with a global-max-pool context branch, trained per task in
seconds on a CPU; checkpoints in ``data/planted/`` with a SHA-256 manifest) and, for ``gate``,
:class:`GateOracle`, a hand-built model whose answer is known exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from scipy import ndimage
from torch import nn

from ..atomic import write_bytes
from ..checks import check_choice, check_int
from ..banks import PatchBank
from ..rois import boundary_roi

__all__ = [
    "TASKS",
    "PlantedSet",
    "make_planted",
    "PlantedNet",
    "GateOracle",
    "train_planted",
    "load_planted",
    "save_planted",
    "planted_models",
    "auroc",
    "average_precision",
    "attribution_accuracy",
    "planted_benchmark",
    "PLANTED_DIR",
]

TASKS: tuple[str, ...] = ("gate", "switch")
SIZE = 64
BLOCK = 8
PLANTED_DIR = Path(__file__).resolve().parents[2] / "data" / "planted"
_RED, _GREEN, _BLUE = np.array([0.9, 0.12, 0.1]), np.array([0.1, 0.8, 0.15]), np.array([0.1, 0.15, 0.9])


@dataclass
class PlantedSet:
    """Images (N, 3, H, W) float32, masks (N, H, W) bool, and per image the planted cause (N, H, W)
    bool, the blobs (N, H, W) bool and the marker's label (``present``: the answer switch).

    Made by :func:`make_planted`.

    Parameters
    ----------
    task : {"gate", "switch"}
        The task the images belong to.
    images : Tensor (N, 3, H, W)
        float32 RGB images in [0, 1].
    masks : bool Tensor (N, H, W)
        The correct segmentation (ground truth).
    cause : bool Tensor (N, H, W)
        The planted cause: the marker's pixels (empty for a ``gate`` image without marker).
    blobs : bool Tensor (N, H, W)
        Every blob, foreground or not.
    present : bool array (N,)
        ``gate``: the marker is present; ``switch``: the marker is red (the left blob is foreground).
    """

    task: str
    images: torch.Tensor
    masks: torch.Tensor
    cause: torch.Tensor
    blobs: torch.Tensor
    present: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def bank(self, per_image: int = 20, seed: int = 0) -> PatchBank:
        """Natural blocks cut from these images (use a split that is not explained).

        Parameters
        ----------
        per_image : int
            Blocks cut from each image.
        seed : int
            Seed of the cut.
        """
        return PatchBank.from_images(self.images, block=BLOCK, per_image=per_image, seed=seed)


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE]
    return np.hypot(y - cy, x - cx) <= r


def _square(row: int, col: int, side: int) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), dtype=bool)
    m[row : row + side, col : col + side] = True
    return m


def _draw(task: str, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    noise = ndimage.gaussian_filter(rng.normal(0, 1, (3, SIZE, SIZE)), (0, 2, 2))
    noise = noise / (noise.std() + 1e-9)
    image = 0.35 + 0.06 * noise + rng.uniform(-0.05, 0.05)
    tone = np.array([0.78, 0.74, 0.68]) * rng.uniform(0.9, 1.1)
    corners = [(0, 0), (0, SIZE - BLOCK), (SIZE - BLOCK, 0), (SIZE - BLOCK, SIZE - BLOCK)]
    if task == "gate":
        blob = _disc(*rng.uniform(26, 38, 2), rng.uniform(8, 12))
        blobs = blob
        where = rng.permutation(4)
        present = bool(rng.random() < 0.5)
        marker = _square(*corners[where[0]], BLOCK)
        distractor = _square(*corners[where[1]], BLOCK)
        colour = _RED
        target = blob if present else np.zeros_like(blob)
        cause = marker if present else np.zeros_like(marker)
        paint = [(blobs, tone), (distractor, _BLUE)] + ([(marker, colour)] if present else [])
    else:
        left = _disc(rng.uniform(24, 40), rng.uniform(14, 20), rng.uniform(7, 10))
        right = _disc(rng.uniform(24, 40), rng.uniform(44, 50), rng.uniform(7, 10))
        blobs = left | right
        present = bool(rng.random() < 0.5)  # True: red marker, the left blob is foreground
        side = 2 * BLOCK
        marker = _square(0, BLOCK * int(rng.integers(0, SIZE // BLOCK - 1)), side)
        distractor = _square(SIZE - side, BLOCK * int(rng.integers(0, SIZE // BLOCK - 1)), side)
        colour = _RED if present else _GREEN
        target = left if present else right
        cause = marker
        paint = [(blobs, tone), (distractor, _BLUE), (marker, colour)]
    for region, rgb in paint:
        shade = rgb[:, None, None] * (1 + 0.06 * noise)
        image = np.where(region[None], shade, image)
    image = ndimage.gaussian_filter(image, (0, 0.6, 0.6))
    return np.clip(image, 0, 1).astype(np.float32), target, cause, blobs, present


def make_planted(task: str, n: int, *, seed: int = 0) -> PlantedSet:
    """Generate `n` images of a planted-cause task, reproducibly from `seed`.

    Parameters
    ----------
    task : {"gate", "switch"}
        The task (module notes).
    n : int
        Number of images.
    seed : int
        Seed of the images (combined with the task, so the two tasks never share draws).

    Examples
    --------
    >>> data = make_planted("gate", 4, seed=0)
    >>> len(data), tuple(data.images.shape), data.present.tolist()
    (4, (4, 3, 64, 64), [True, True, False, True])
    >>> data.cause.sum(dim=(1, 2)).tolist()          # the 8 x 8 marker, when present
    [64, 64, 0, 64]
    """
    check_choice("task", task, TASKS)
    n = check_int("n", n, minimum=1)
    rng = np.random.default_rng([seed, TASKS.index(task)])
    draws = [_draw(task, rng) for _ in range(n)]
    images, masks, cause, blobs, present = (np.stack(v) for v in zip(*draws))
    return PlantedSet(task, torch.from_numpy(images), torch.from_numpy(masks), torch.from_numpy(cause),
                      torch.from_numpy(blobs), present.astype(bool))


# -- models ------------------------------------------------------------------------------------


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False))


class PlantedNet(nn.Module):
    """A small U-Net (64 -> 8 px) whose bottleneck also sees a global max-pool of its input.

    The context branch lets the 8 x 8 bottleneck read a marker anywhere in the image, which a plain
    receptive field of this depth would reach only partly. ``forward`` returns probabilities,
    ``logits`` the pre-sigmoid scores (the zoo's convention).

    Parameters
    ----------
    width : int
        Channels of the first stage (the deeper stages have twice as many).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_conv(3, w), _conv(w, w))
        self.enc2 = _conv(w, 2 * w)
        self.enc3 = _conv(2 * w, 2 * w)
        self.enc4 = _conv(2 * w, 2 * w)
        self.context = nn.AdaptiveMaxPool2d(1)
        self.bottleneck = _conv(4 * w, 2 * w)
        self.dec3 = _conv(4 * w, 2 * w)
        self.dec2 = _conv(4 * w, w)
        self.dec1 = _conv(2 * w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores.

        Parameters
        ----------
        x : Tensor (B, 3, H, W)
            Images in [0, 1], H and W multiples of 8.

        Returns
        -------
        Tensor (B, 1, H, W)
        """
        e1 = self.enc1(x - 0.5)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.enc4(F.max_pool2d(e3, 2))
        g = self.context(e4).expand_as(e4)
        b = self.bottleneck(torch.cat([e4, g], 1))
        d3 = self.dec3(torch.cat([F.interpolate(b, scale_factor=2.0), e3], 1))
        d2 = self.dec2(torch.cat([F.interpolate(d3, scale_factor=2.0), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        return self.head(d1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities, ``sigmoid(logits(x))``.

        Parameters
        ----------
        x : Tensor (B, 3, H, W)
            Images in [0, 1], H and W multiples of 8.
        """
        return torch.sigmoid(self.logits(x))


class GateOracle(nn.Module):
    """The ``gate`` task solved by hand: bright pixels are foreground iff a corner block is red.

    A fixed 1 x 1 convolution ``colour`` gives redness R - (G + B) / 2 and brightness (R + G + B) / 3;
    gate = sigmoid(s * (max over the four corner blocks of the mean redness - 0.3)),
    pixel = sigmoid(s * (brightness - 0.6)), output = pixel * gate. Only the marker block decides the
    gate; the blue distractor has negative redness. ``colour`` is a real layer (for Grad-CAM and the
    randomisation check).

    Parameters
    ----------
    sharpness : float
        s, the slope of both sigmoids.

    Examples
    --------
    >>> data = make_planted("gate", 4, seed=0)
    >>> pred = GateOracle()(data.images)[:, 0] > 0.5
    >>> bool((pred == data.masks).float().mean() > 0.99)
    True
    """

    def __init__(self, sharpness: float = 30.0) -> None:
        super().__init__()
        self.sharpness = sharpness
        self.colour = nn.Conv2d(3, 2, 1, bias=False)
        self.colour.weight.data = torch.tensor([[1.0, -0.5, -0.5], [1 / 3, 1 / 3, 1 / 3]]).reshape(2, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities.

        Parameters
        ----------
        x : Tensor (B, 3, 64, 64)
            Images of the ``gate`` task.

        Returns
        -------
        Tensor (B, 1, 64, 64)
        """
        s, b = self.sharpness, BLOCK
        features = self.colour(x)
        red, bright = features[:, 0], features[:, 1:]
        corners = torch.stack([red[:, :b, :b], red[:, :b, -b:], red[:, -b:, :b], red[:, -b:, -b:]], 1)
        gate = torch.sigmoid(s * (corners.mean(dim=(2, 3)).amax(dim=1) - 0.3))
        return torch.sigmoid(s * (bright - 0.6)) * gate[:, None, None, None]


def train_planted(task: str, *, seed: int = 0, n_train: int = 1500, steps: int = 300, batch: int = 32,
                  lr: float = 3e-3, width: int = 16) -> tuple[PlantedNet, dict[str, Any]]:
    """Train a :class:`PlantedNet` on a task (BCE + soft Dice, Adam); returns the model and its recipe.

    Parameters
    ----------
    task : {"gate", "switch"}
        The task.
    seed : int
        Seed of the weights and batches (the training images use ``seed + 1000``).
    n_train : int
        Training images.
    steps : int
        Optimiser steps (one-cycle learning-rate schedule).
    batch : int
        Images per step.
    lr : float
        Peak learning rate.
    width : int
        :class:`PlantedNet` width.

    Returns
    -------
    (PlantedNet, dict)
        The model in eval mode and the recipe (these arguments, the loss and the optimiser).
    """
    check_choice("task", task, TASKS)
    data = make_planted(task, n_train, seed=seed + 1000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PlantedNet(width)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
        g = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, n_train, (batch,), generator=g)
            x, y = data.images[idx], data.masks[idx].float().unsqueeze(1)
            z = model.logits(x)
            p = torch.sigmoid(z)
            dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(z, y) + dice
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    recipe = {"task": task, "seed": seed, "n_train": n_train, "steps": steps, "batch": batch, "lr": lr, "width": width,
              "loss": "BCE + soft Dice", "optimiser": "Adam, one-cycle schedule"}
    return model, recipe


def _test_dice(model: nn.Module, task: str) -> float:
    test = make_planted(task, 200, seed=7)
    with torch.no_grad():
        pred = model(test.images)[:, 0] > 0.5
    inter = (pred & test.masks).sum().item()
    return float(2 * inter / (pred.sum().item() + test.masks.sum().item() + 1e-10))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_planted(model: PlantedNet, recipe: Mapping[str, Any], *, folder: Path = PLANTED_DIR) -> Path:
    """Write a compact float16 checkpoint ``<task>.pt`` and record its SHA-256 in ``MANIFEST.json``.

    Parameters
    ----------
    model : PlantedNet
        The trained model.
    recipe : mapping
        Its recipe from :func:`train_planted` (``task`` names the file); stored in the manifest with
        the checksum, the size and the test Dice of the saved (float16) weights.
    folder : path
        Where the checkpoint and the manifest live (default: ``data/planted`` of the repository).

    Returns
    -------
    pathlib.Path
        The checkpoint written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task = str(recipe["task"])
    buffer = io.BytesIO()
    torch.save({k: v.half() for k, v in model.state_dict().items()}, buffer)
    data = buffer.getvalue()
    path = folder / f"{task}.pt"
    write_bytes(path, data)
    manifest_path = folder / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    loaded = _build(data, recipe)
    manifest[task] = {**dict(recipe), "file": path.name, "sha256": _sha256(data), "bytes": len(data),
                      "test_dice": round(_test_dice(loaded, task), 4)}
    write_bytes(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def _build(data: bytes, recipe: Mapping[str, Any]) -> PlantedNet:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = PlantedNet(int(recipe.get("width", 16)))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def load_planted(task: str, *, folder: Path = PLANTED_DIR) -> tuple[PlantedNet, dict[str, Any]]:
    """Load the committed checkpoint of a task after checking its SHA-256 against the manifest.

    Parameters
    ----------
    task : {"gate", "switch"}
        The task.
    folder : path
        Folder of the checkpoints and ``MANIFEST.json``.

    Returns
    -------
    (PlantedNet, dict)
        The model in eval mode and its manifest entry.

    Examples
    --------
    >>> model, meta = load_planted("gate")
    >>> meta["file"], meta["test_dice"] > 0.9
    ('gate.pt', True)
    """
    check_choice("task", task, TASKS)
    folder = Path(folder)
    manifest_path = folder / "MANIFEST.json"
    if not manifest_path.exists() or task not in json.loads(manifest_path.read_text()):
        raise FileNotFoundError(
            f"no planted checkpoint for task={task!r} in {folder}; train one with "
            "`pdcr-lab benchmark faithfulness --train-planted` (or train_planted + save_planted)"
        )
    meta = json.loads(manifest_path.read_text())[task]
    data = (folder / meta["file"]).read_bytes()
    digest = _sha256(data)
    if digest != meta["sha256"]:
        raise ValueError(f"{folder / meta['file']} has SHA-256 {digest[:12]}... but MANIFEST.json records "
                         f"{meta['sha256'][:12]}...; the checkpoint was changed, retrain it")
    return _build(data, meta), meta


def planted_models(task: str, *, folder: Path = PLANTED_DIR) -> dict[str, nn.Module]:
    """The models of a task: the trained ``planted_net`` and, for ``gate``, the hand-built ``oracle``.

    Parameters
    ----------
    task : {"gate", "switch"}
        The task.
    folder : path
        Folder of the checkpoints (see :func:`load_planted`).

    Examples
    --------
    >>> sorted(planted_models("gate")), sorted(planted_models("switch"))
    (['oracle', 'planted_net'], ['planted_net'])
    """
    models: dict[str, nn.Module] = {"planted_net": load_planted(task, folder=folder)[0]}
    if task == "gate":
        models["oracle"] = GateOracle().eval()
    return models


# -- attribution accuracy ------------------------------------------------------------------------


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    :func:`sklearn.metrics.roc_auc_score`, except that it is NaN, not an error, when there is no
    positive or no negative (an image whose usable blocks are all of one kind).

    Parameters
    ----------
    scores : array-like
        One score per item (any shape; flattened), higher = more likely positive.
    labels : array-like of bool
        True for the positives, same number of items as `scores`.

    Examples
    --------
    >>> auroc(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0], bool))
    0.75
    """
    from sklearn.metrics import roc_auc_score

    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels, dtype=bool).ravel()
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision: the mean, over the positives, of the precision among all items scored at
    least as high as that positive (ties count against); the area under the precision-recall curve.

    :func:`sklearn.metrics.average_precision_score`, except that it is NaN when there is no positive
    (scikit-learn returns 0 with a warning).

    Parameters
    ----------
    scores : array-like
        One score per item (any shape; flattened), higher = more likely positive.
    labels : array-like of bool
        True for the positives, same number of items as `scores`.

    Examples
    --------
    >>> round(average_precision(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0], bool)), 4)
    0.8333
    """
    from sklearn.metrics import average_precision_score

    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels, dtype=bool).ravel()
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, scores))


def attribution_accuracy(ds: xr.Dataset, cause: Any, blobs: Any) -> tuple[float, float]:
    """(AUROC, AUPRC) of |ate| on the block grid against the planted cause (see the module notes).

    Parameters
    ----------
    ds : xarray.Dataset
        One map on the 8-pixel block grid of the image (any explainer's output).
    cause : bool array (H, W)
        The planted cause's pixels (``PlantedSet.cause[i]``).
    blobs : bool array (H, W)
        The blobs' pixels (``PlantedSet.blobs[i]``), left out of the negatives.

    Examples
    --------
    A map whose only effect sits on the marker block ranks the cause perfectly:

    >>> data = make_planted("gate", 1, seed=0)
    >>> ds = pdcr_lab.schema.empty_effects(grid=(8, 8), block=8)
    >>> ds["roi_block"][3:5, 3:5] = True
    >>> row, col = (int(v) // 8 for v in np.argwhere(data.cause[0].numpy())[0])
    >>> ds["ate"][row, col] = -10.0
    >>> attribution_accuracy(ds, data.cause[0], data.blobs[0])
    (1.0, 1.0)
    """
    block = int(ds.attrs["block"])
    grid = (ds.sizes["block_y"], ds.sizes["block_x"])

    def blocks_of(mask: np.ndarray) -> np.ndarray:
        return np.asarray(mask, dtype=bool).reshape(grid[0], block, grid[1], block).any(axis=(1, 3))

    positive = blocks_of(np.asarray(cause))
    roi = np.asarray(ds["roi_block"].values, dtype=bool)
    usable = positive | ~(blocks_of(np.asarray(blobs)) | roi)
    usable &= ~roi
    scores = np.abs(np.asarray(ds["ate"].values, dtype=np.float64))[usable]
    return auroc(scores, positive[usable]), average_precision(scores, positive[usable])


Explainer = Callable[..., xr.Dataset]


def planted_benchmark(
    methods: Mapping[str, Explainer],
    *,
    tasks: Sequence[str] = TASKS,
    n_images: int = 3,
    seed: int = 0,
    folder: Path = PLANTED_DIR,
    progress: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Attribution accuracy of every method on every planted task and model.

    Parameters
    ----------
    methods : mapping name -> callable(model, image, *, roi, target, bank, seed) -> effects Dataset
        The explainers (``pdcr_lab.studies.study_methods`` gives the study's set).
    tasks : sequence of {"gate", "switch"}
        The tasks.
    n_images : int
        Test images per task, the first ones of the seeded test split whose RoI has a planted cause
        (``gate``: the marker is present).
    seed : int
        Seed of every explainer (shared by all methods).
    folder : path
        Folder of the checkpoints (see :func:`planted_models`).
    progress : callable(str), optional
        Receives a line naming each (task, model, image, method) before it runs.

    Returns
    -------
    xarray.Dataset
        ``auroc`` and ``auprc`` with dims (task, model, image, method).
    """
    n_images = check_int("n_images", n_images, minimum=1)
    records: dict[tuple[str, str, int, str], tuple[float, float]] = {}
    failures: dict[str, str] = {}
    model_names: list[str] = []
    for task in tasks:
        check_choice("tasks", task, TASKS)
        bank = make_planted(task, 60, seed=seed + 500).bank(seed=seed)
        pool = make_planted(task, 8 * n_images, seed=seed + 100)
        chosen = [i for i in range(len(pool)) if pool.cause[i].any() and pool.masks[i].any()][:n_images]
        for model_name, model in planted_models(task, folder=folder).items():
            model_names += [model_name] if model_name not in model_names else []
            for j, i in enumerate(chosen):
                roi = boundary_roi(pool.masks[i], size=16, block=BLOCK)
                for name, explainer in methods.items():
                    if progress is not None:
                        progress(f"planted {task} {model_name} image {j} {name}")
                    try:
                        ds = explainer(model, pool.images[i], roi=roi, target=pool.masks[i], bank=bank, seed=seed)
                    except (ValueError, TypeError) as exc:  # a method that does not apply to this model
                        failures[f"{task}/{model_name}/{name}"] = str(exc)
                        continue
                    records[(task, model_name, j, name)] = attribution_accuracy(ds, pool.cause[i], pool.blobs[i])
    shape = (len(tasks), len(model_names), n_images, len(methods))
    out = {k: np.full(shape, np.nan) for k in ("auroc", "auprc")}
    for (task, model_name, j, name), (a, p) in records.items():
        at = (list(tasks).index(task), model_names.index(model_name), j, list(methods).index(name))
        out["auroc"][at], out["auprc"][at] = a, p
    dims = ("task", "model", "image", "method")
    return xr.Dataset(
        {k: (dims, v) for k, v in out.items()},
        coords={"task": list(tasks), "model": model_names, "image": np.arange(n_images), "method": list(methods)},
        attrs={"seed": seed, "block": BLOCK, "image_size": SIZE, "failures": json.dumps(failures),
               "definition": "AUROC/AUPRC of |ate| on the block grid; positives: marker blocks; "
                             "negatives: blocks overlapping neither the marker, a blob nor the RoI"},
    )
