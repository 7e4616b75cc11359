"""Deletion and insertion curves of the RoI outcome over the blocks a map ranks most supportive.

Definitions *(ours, docs/method.md section 8)*. For an image X, an RoI and a map on the b x b block grid:

* **Candidates**: the K blocks that do not overlap the RoI (RoI blocks are never perturbed, as in PdCR).
* **Ranking**: candidates sorted by the support score ``support_sign * ate`` in decreasing order
  (PdCR and occlusion: most negative ATE first; Grad-CAM, MiSuRe, RISE: largest value first; see
  :mod:`pdcr_lab.baselines`). Ties are broken by one random permutation of the grid drawn from
  ``seed``, the same for every map, so an all-zero map is ranked at random.
* **Replacement policy** q: a full replacement image R_q, the image with every block replaced by the
  project's intervention q (:func:`pdcr_lab.interventions.make_intervention`): ``natural`` (draw 0
  of the seeded bank table: one fixed natural block per cell, shared by all maps), ``zero``,
  ``blur`` (Gaussian, sigma = b / 2) or ``mean``.
* **Deletion** curve: D_k = M(f(X with the first k ranked blocks := R_q)), k = 0..K.
  **Insertion** curve: I_k = M(f(R_q with the RoI blocks and the first k ranked blocks := X)).
  D_0 = I_K = M0, the factual outcome.
* **Area**: with x_k = k / K and y_k = M_k / 100 (outcomes are in points, 0..100),
  AUC = trapezoidal integral of y over x in [0, 1]; so AUC is in [0, 1] whatever K is. A faithful
  map has a LOW deletion AUC (the outcome falls as soon as its top blocks go) and a HIGH insertion
  AUC. With ``steps`` the curve is evaluated at ``steps`` evenly spaced k (always including 0 and
  K) and the trapezoid runs over those points.

Every step of every map, policy and curve is composed on the device by one ``torch.where`` between
the image and R_q and run in large batches (out-of-memory halves the batch and goes on). Steps that
do not depend on the ranking are run once: D_0 = I_K = M0 and D_K = I_0 (one image per policy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..checks import as_image, check_choice, check_int, describe
from ..banks import PatchBank
from ..call import READING, RoiOutcome, auto_batch_size, check_reading, evaluation, prepare, replacement_image
from ..estimator import run_batched
from ..interventions import INTERVENTIONS
from ..schema import GRID_DIMS, effects_dataset, validate

__all__ = [
    "POLICIES", "CURVES", "deletion_insertion", "support_scores", "ranking", "curve_auc", "random_map", "as_maps",
]

#: The replacement policies scored by default: no method wins only with its own perturbation.
POLICIES: tuple[str, ...] = ("natural", "zero", "blur")
CURVES: tuple[str, ...] = ("deletion", "insertion")


def _fact(ds: xr.Dataset, key: str, default: Any = None) -> Any:
    """A run fact from the attrs, or from a scalar coordinate (where :func:`~pdcr_lab.schema.stack` puts it)."""
    if key in ds.attrs:
        return ds.attrs[key]
    if key in ds.coords and ds.coords[key].ndim == 0:
        return ds.coords[key].item()
    return default


def as_maps(maps: Any) -> list[tuple[str, xr.Dataset]]:
    """Maps argument -> [(label, single-map dataset)]: one dataset, one with a ``method`` dim,
    a mapping label -> dataset, or a sequence of datasets (labelled by their ``method`` attr).

    Parameters
    ----------
    maps : Dataset, mapping label -> Dataset, or sequence of Datasets
        Effects maps, as :func:`deletion_insertion` accepts them.

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4, method="pdcr")
    >>> [label for label, _ in as_maps([ds, ds.assign_attrs(method="rise")])]
    ['pdcr', 'rise']
    """
    if isinstance(maps, xr.Dataset):
        if "method" in maps.dims:
            return [(str(m), maps.sel({"method": m})) for m in maps["method"].values]
        return [(str(_fact(maps, "method", "map")), maps)]
    if isinstance(maps, Mapping):
        items = [(str(k), v) for k, v in maps.items()]
    elif isinstance(maps, Sequence) and not isinstance(maps, str):
        items = [(str(_fact(v, "method", f"map{i}")) if isinstance(v, xr.Dataset) else f"map{i}", v)
                 for i, v in enumerate(maps)]
    else:
        raise TypeError(
            f"maps must be an effects Dataset, a mapping label -> Dataset or a list of them, got {describe(maps)}"
        )
    if not items:
        raise ValueError("maps is empty: give at least one map")
    for label, ds in items:
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"maps[{label!r}] must be an effects Dataset, got {describe(ds)}")
    labels = [label for label, _ in items]
    if len(set(labels)) != len(labels):
        raise ValueError(f"maps have duplicate labels {labels}; pass a mapping label -> Dataset")
    return items


def _check_map(label: str, ds: xr.Dataset, grid: tuple[int, int], block: int, shape: tuple[int, int]) -> None:
    validate(ds)
    extra = [d for d in ds["ate"].dims if d not in GRID_DIMS]
    if extra:
        raise ValueError(f"maps[{label!r}] has extra dims {extra}; give one map per image and RoI (select with .isel)")
    got = (ds.sizes["block_y"], ds.sizes["block_x"])
    if int(ds.attrs.get("block", block)) != block or got != grid:
        raise ValueError(
            f"maps[{label!r}] has a {got[0]}x{got[1]} block grid (block={ds.attrs.get('block')}) but the "
            f"{shape[0]}x{shape[1]} image with block={block} needs {grid[0]}x{grid[1]}"
        )
    values = np.asarray(ds["ate"].values, dtype=np.float64)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ValueError(f"maps[{label!r}] has {bad} NaN or Inf values in 'ate'; a map must be finite to rank blocks")


def support_scores(ds: xr.Dataset) -> np.ndarray:
    """(Gy, Gx) ``support_sign * ate``: larger = the block supports the RoI more.

    ``support_sign`` comes from the map's attrs; maps without it follow the schema's convention
    (-1: negative ATE = supports), which is PdCR's.

    Parameters
    ----------
    ds : xarray.Dataset
        One map in the effects schema.

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(1, 2), block=4)
    >>> ds["ate"][0, 1] = -3.0
    >>> support_scores(ds)
    array([[-0.,  3.]])
    """
    sign = int(_fact(ds, "support_sign", -1))
    if sign not in (-1, 1):
        raise ValueError(f"support_sign={sign} must be -1 or +1")
    return sign * np.asarray(ds["ate"].values, dtype=np.float64)


def ranking(ds: xr.Dataset, *, seed: int = 0) -> np.ndarray:
    """Flat indices of the candidate (non-RoI) blocks, most supportive first; ties in seeded random order.

    Parameters
    ----------
    ds : xarray.Dataset
        One map in the effects schema (``roi_block`` excludes the RoI's blocks).
    seed : int
        Seed of the tie-breaking permutation (the same for every map of a comparison).

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> ds["roi_block"][0, 0] = True
    >>> ds["ate"][1, 1] = -3.0                    # the block that supports the RoI most
    >>> ds["ate"][0, 1] = 1.0                     # a harmful block: last
    >>> ranking(ds).tolist()
    [3, 2, 1]
    """
    scores = support_scores(ds).reshape(-1)
    roi = np.zeros(scores.size, bool)
    if "roi_block" in ds:
        roi = np.asarray(ds["roi_block"].values, dtype=bool).reshape(-1)
    candidates = np.flatnonzero(~roi)
    tie = np.random.default_rng(seed).permutation(scores.size)
    order = np.lexsort((tie[candidates], -scores[candidates]))
    return candidates[order]


def curve_auc(fraction: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Trapezoidal area under y = values / 100 over x = fraction (last axis), in [0, 1] for outcomes in points.

    Parameters
    ----------
    fraction : array (S,)
        x, the fraction k / K of changed blocks at each step, from 0 to 1.
    values : array (..., S)
        The outcomes at those steps, in points (0..100).

    Examples
    --------
    >>> float(curve_auc(np.array([0.0, 0.5, 1.0]), np.array([100.0, 50.0, 0.0])))
    0.5
    """
    y = np.asarray(values, dtype=np.float64) / 100.0
    x = np.asarray(fraction, dtype=np.float64)
    return ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(x)).sum(axis=-1)


def random_map(like: xr.Dataset, *, seed: int = 0) -> xr.Dataset:
    """A map of uniform random values on `like`'s grid: the random-ranking control (method "random").

    Parameters
    ----------
    like : xarray.Dataset
        A single map; its grid, RoI and ``m0`` are copied (RoI blocks stay 0).
    seed : int
        Seed of the random values.

    Examples
    --------
    >>> like = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> control = random_map(like, seed=1)
    >>> control.attrs["method"], control.attrs["support_sign"], bool((control.ate > 0).all())
    ('random', 1, True)
    """
    roi = np.asarray(like["roi_block"].values, dtype=bool)
    values = np.where(roi, 0.0, np.random.default_rng(seed).random(roi.shape))
    zeros = np.zeros(roi.shape)
    box = [int(like[k]) for k in ("roi_row", "roi_col", "roi_height", "roi_width")]
    attrs = {"method": "random", "block": int(like.attrs["block"]), "outcome": "none", "units": "rank score",
             "support_sign": 1, "seed": int(seed)}
    ds = effects_dataset(
        {"ate": values, "ate_raw": values, "stderr": zeros, "n_draws": np.zeros(roi.shape, np.int32),
         "screened": np.zeros(roi.shape, bool), "roi_block": roi},
        m0=float(like["m0"]), forwards=0, roi_mask=np.asarray(like["roi_mask"].values), roi_box=box, attrs=attrs,
    )
    return validate(ds)


def deletion_insertion(
    model: nn.Module,
    image: Any,
    maps: Any,
    *,
    target: Any = None,
    policies: Sequence[str] = POLICIES,
    bank: PatchBank | None = None,
    steps: int | None = None,
    random_control: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    **reading: Any,
) -> xr.Dataset:
    """Deletion and insertion curves (and their areas) of one or more maps of the same image and RoI.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model (read as in :func:`pdcr_lab.explain`).
    image : Tensor or array (C, H, W)
        The explained image, values in [0, 1].
    maps : effects Dataset, Dataset with a ``method`` dim, mapping label -> Dataset, or list
        Maps of this image and one RoI on the same block grid (any explainer's output). The RoI is
        read from the maps' ``roi_mask``; all maps must share it.
    target : array (H, W), optional
        Ground truth of the outcome; None: the model's factual prediction (as PdCR).
    policies : sequence of {"natural", "zero", "blur", "mean"}
        Replacement policies (see the module notes); ``natural`` needs `bank`.
    bank : PatchBank, optional
        Natural blocks of the ``natural`` policy (and the mean colour of ``mean``).
    steps : int, optional
        Evaluate each curve at this many evenly spaced k (>= 2); None: every k = 0..K.
    random_control : bool
        Add the curves of a random ranking (label ``"random"``, seeded by `seed`).
    seed : int
        Seed of the natural draws and of the tie-breaking permutation (shared by all maps).
    batch_size : int, optional
        Images per forward pass; does not change the result.
    device : str or torch.device, optional
        Where to run.
    **reading
        ``outcome``, ``threshold``, ``class_index``, ``output_key``, ``activation``, ``normalize``:
        the RoI outcome M and how the model is read, as in :func:`pdcr_lab.explain` (the block size
        is the maps').

    Returns
    -------
    xarray.Dataset
        ``outcome`` (method, policy, curve, step) in outcome units, ``auc`` (method, policy, curve)
        in [0, 1], coords ``blocks`` (k) and ``fraction`` (k / K) along ``step``, and ``m0``.

    Raises
    ------
    ValueError
        A map on another grid, with NaN values, with an RoI different from the others', or a
        policy that does not exist.

    Examples
    --------
    PdCR ranks the two blocks that support the RoI first, so its deletion curve falls sooner than
    the random control's (a lower deletion AUC):

    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    >>> torch.nn.init.constant_(net.weight, 0.2)
    Parameter containing:
    ...
    >>> image = torch.zeros(1, 8, 8); image[:, 2:6, 2:6] = 1.0
    >>> pdcr = pdcr_lab.explain(net, image, roi=(4, 4, 4, 4), intervention="zero", block=4)
    >>> out = deletion_insertion(net, image, pdcr, policies=["zero"])
    >>> out.method.values.tolist(), out.blocks.values.tolist()
    (['pdcr', 'random'], [0, 1, 2, 3])
    >>> out.outcome.sel(policy="zero", curve="deletion").round(1).values
    array([[100. ,  90.9,  80. ,  80. ],
           [100. , 100. ,  90.9,  80. ]])
    >>> out.auc.sel(policy="zero", curve="deletion").round(3).values
    array([0.87 , 0.936])
    """
    items = as_maps(maps)
    first = items[0][1]
    block = int(first.attrs["block"])
    h, w = as_image("image", image).shape[1:]
    for label, ds in items:
        _check_map(label, ds, (h // block, w // block), block, (h, w))
    roi_mask = np.asarray(first["roi_mask"].values, dtype=bool)
    for label, ds in items[1:]:
        if not np.array_equal(np.asarray(ds["roi_mask"].values, dtype=bool), roi_mask):
            raise ValueError(
                f"maps[{label!r}] explains another RoI than maps[{items[0][0]!r}]; curves compare maps of one RoI"
            )
    check_reading("deletion_insertion", reading, allowed=[k for k in READING if k != "block"])
    call = prepare(model, image, roi=roi_mask, target=target, seed=seed, device=device, caller="deletion_insertion",
                   bank=bank, block=block, **reading)
    c, h, w = call.image.shape
    grid = call.grid
    if random_control and "random" not in dict(items):
        items.append(("random", random_map(first, seed=seed)))
    policies = [check_choice("policies", p, INTERVENTIONS) for p in policies]
    if not policies:
        raise ValueError("policies is empty; give at least one of " + str(list(INTERVENTIONS)))
    if len(set(policies)) != len(policies):
        raise ValueError(f"policies={list(policies)} has duplicates")

    n_cells = grid[0] * grid[1]
    orders = [ranking(ds, seed=seed) for _, ds in items]
    k_total = len(orders[0])
    if steps is None:
        ks = np.arange(k_total + 1)
    else:
        steps = check_int("steps", steps, minimum=2)
        ks = np.unique(np.round(np.linspace(0, k_total, min(steps, k_total + 1))).astype(np.int64))
    position = np.full((len(items), n_cells), n_cells, dtype=np.int64)  # RoI blocks: never reached
    for i, order in enumerate(orders):
        position[i, order] = np.arange(k_total)
    candidate = torch.from_numpy(position[0] < n_cells)

    n_m, n_p, n_s = len(items), len(policies), len(ks)
    # Only interior steps depend on the ranking: D_0 = I_K = M0, and D_K = I_0 (every candidate
    # replaced) is one image per policy, evaluated once as job (map 0, policy q, deletion, last step).
    interior = np.arange(1, n_s - 1)
    grid_jobs = np.meshgrid(np.arange(n_m), np.arange(n_p), np.arange(2), interior, indexing="ij")
    jobs = np.stack(grid_jobs, -1).reshape(-1, 4)
    ends = np.stack([np.zeros(n_p, np.int64), np.arange(n_p), np.zeros(n_p, np.int64), np.full(n_p, n_s - 1)], -1)
    jobs = np.concatenate([jobs, ends])
    fills = torch.stack([replacement_image(p, call.image, block, bank=call.bank, seed=call.seed) for p in policies])
    size = batch_size or auto_batch_size((c, h, w), call.device)
    b = block
    with evaluation(model, call.device):
        state = RoiOutcome(call)
        dev = call.device
        pos_dev, ks_dev = torch.from_numpy(position).to(dev), torch.from_numpy(ks).to(dev)
        jobs_dev, fills_dev, cand_dev = torch.from_numpy(jobs).to(dev), fills.to(dev), candidate.to(dev)

        def evaluate(index: torch.Tensor, _draws: torch.Tensor) -> torch.Tensor:
            m, q, curve, s = jobs_dev[index.to(dev)].unbind(-1)
            first_k = pos_dev[m] < ks_dev[s][:, None]  # (J, G): the k top-ranked blocks
            replaced = torch.where((curve == 0)[:, None], first_k, cand_dev[None] & ~first_k)
            pixels = replaced.reshape(-1, 1, *grid).repeat_interleave(b, 2).repeat_interleave(b, 3)
            return state(torch.where(pixels, fills_dev[q], state.image))

        index = torch.arange(len(jobs))
        values, _ = run_batched(evaluate, index, index, size)
        m0 = float(state.m0[0])
    values = values[:, 0].numpy()
    curves = np.full((n_m, n_p, 2, n_s), m0)
    m, q, curve, step = jobs[: len(jobs) - n_p].T
    curves[m, q, curve, step] = values[: len(jobs) - n_p]
    curves[:, :, 0, -1] = curves[:, :, 1, 0] = values[len(jobs) - n_p :][None, :]
    fraction = ks / max(k_total, 1)
    result = xr.Dataset(
        {
            "outcome": (("method", "policy", "curve", "step"), curves,
                        {"long_name": "RoI outcome after k block changes", "units": call.outcome.units}),
            "auc": (("method", "policy", "curve"), curve_auc(fraction, curves),
                    {"long_name": "normalised area under the curve (deletion: lower is better; insertion: higher)"}),
            "m0": ((), m0, {"long_name": "factual outcome M0", "units": call.outcome.units}),
        },
        coords={
            "method": [label for label, _ in items],
            "policy": list(policies),
            "curve": list(CURVES),
            "step": np.arange(n_s),
            "blocks": ("step", ks),
            "fraction": ("step", fraction),
        },
        attrs={
            "candidates": k_total, "block": block, "outcome": call.outcome.name, "seed": call.seed,
            "target_source": "prediction" if call.target is None else "ground_truth",
            "forwards": len(jobs) + state.forwards,
        },
    )
    return result
