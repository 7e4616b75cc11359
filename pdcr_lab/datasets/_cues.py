"""A generated set whose foreground is decided by three redundant cues at different ranges.

Each image holds thin bright structures on a dark background. Some structures are foreground
(the mask), the others are distractors, and three independent cues tell them apart:

- **local** (a few pixels): foreground structures are sharp-edged and carry a pixel-scale
  checker texture; distractors are soft-edged (Gaussian blur, 0.9 px) and smooth.
- **global** (the whole image): every structure has its own luminance; foreground ones lie above
  an image-wide level ``L`` (by 0.06 to 0.14), distractors below it (by as much). ``L`` varies per
  image (0.30 to 0.45, so a luminance alone is ambiguous across images) and is encoded by a red-blue
  colour cast whose image mean is an exact linear function of ``L``; locally the cast is hidden by
  a smooth chroma noise of comparable amplitude, so only a wide view decodes the level.
- **sequential** (a chain across the image): foreground structures are the chains connected to a
  green source disc; distractors are separated from them by a gap of at least ``max(3 px, 0.05
  size)``. Many distractors grow from a decoy site (where no disc is drawn) and look like chains.

In the ``"mixed"`` regime (the ``cues`` dataset) the train and val images have their cues mixed per
image (:data:`TRAIN_ABSENT`: 40% of the images show all three, 45% miss one, 15% miss two, the
missing cues drawn uniformly), so every cue is needed somewhere in training; the test split shows
all three, and which one a model relies on is its own choice. In a single-cue regime
(:data:`REGIMES`: ``"global"``, ``"sequential"``, ``"local"``; the datasets ``cues_global``,
``cues_sequential``) every image of every split shows that cue alone, so a model that solves the
task must use it. :func:`ablate` removes or contradicts one cue at a time.

``controls`` sets each cue to ``"present"``, ``"absent"`` (the cue carries no information) or
``"contradicted"`` (the cue points the wrong way), while the geometry, the mask and every other
cue stay the same: the image is rendered from a per-image ``render_seed`` kept in the metadata,
with one random stream per component, so :func:`ablate` re-renders an image with one cue changed
and the mask is identical. In the generated splits every cue is present, so the mask is decidable
from any one of them (and from any two when one is ablated at test time).
:func:`cue_reliance` measures a model's reliance on each cue as the drop in Dice under ablation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ._synth import generate_stack, grid, smooth_noise, smoothstep, stamp_discs

__all__ = [
    "CUES",
    "DESCRIPTION",
    "MODES",
    "ORACLES",
    "REGIMES",
    "SPLITS",
    "VERSION",
    "ablate",
    "ablate_batch",
    "cue_reliance",
    "decode_level",
    "dice",
    "draw_cues",
    "far_from_source",
    "generate",
    "render",
    "split_sizes",
    "training_controls",
]

VERSION = 2
CUES = ("local", "global", "sequential")
MODES = ("present", "absent", "contradicted")
SPLITS = {"train": 320, "val": 48, "test": 64}
#: Cue modes of the train and val images: how many cues are absent, with what probability. Every
#: cue is missing from some training images, so a model cannot reach a low loss on one cue alone;
#: which cues it relies on when all are present (the test split) is then its own choice, measured by
#: ablation. Never more than two absent: an image without any cue has no decidable mask.
TRAIN_ABSENT = {0: 0.40, 1: 0.45, 2: 0.15}
#: How the cues are shown: "mixed" (train/val as TRAIN_ABSENT, test all three) or one cue alone.
REGIMES = ("mixed", "local", "global", "sequential")

LEVEL_RANGE = (0.30, 0.45)  # the image-wide level L
MARGIN = (0.06, 0.14)  # |structure luminance - L|
CAST_RANGE = (0.05, 0.20)  # mean red-blue chroma for L at the two ends of LEVEL_RANGE; 0 = no cast
CAST_NOISE = 0.12  # amplitude of the zero-mean smooth chroma noise hiding the cast locally
TEXTURE = 0.15  # relative amplitude of the checker texture of locally marked structures
SOFT_SIGMA = 0.9  # blur (px) of soft-edged structures
BACKGROUND = 0.07  # background luminance (plus smooth variation of 0.015)
DISC_LUMA = 0.45
_CAST_DIR = np.array([1.0, 0.0, -1.0])  # zero-sum: the pixel mean of RGB is the luminance
_DISC_DIR = np.array([-0.35, 0.7, -0.35])  # green, orthogonal to the cast
_MAX_PARTS = 256  # per-image draws of component levels (components beyond reuse them cyclically)

DESCRIPTION = (
    "Generated cue-controlled images, RGB: thin bright chains on a dark background, some foreground "
    "(connected to a green source disc), the others distractors (unconnected, many grown from a "
    "decoy site). Three redundant cues decide the mask: local (foreground sharp-edged with a "
    "pixel-scale checker texture, distractors blurred and smooth), global (foreground brighter and "
    "distractors darker than an image-wide level encoded by the mean red-blue colour cast, hidden "
    "locally by chroma noise), sequential (connection through a chain to the source disc). "
    "mask = the foreground chains. Each cue can be removed or contradicted per image "
    "(pdcr_lab.datasets._cues.ablate) with the mask unchanged. Train and val images miss zero (40%), one (45%) or two (15%) "
    "cues, drawn per image; test images show all three. "
    f"Splits train/val/test = {SPLITS['train']}/{SPLITS['val']}/{SPLITS['test']} independent images."
)


def _check_controls(controls: Mapping[str, str] | None) -> dict[str, str]:
    out = dict.fromkeys(CUES, "present")
    for cue, mode in (controls or {}).items():
        if cue not in CUES:
            raise ValueError(f"unknown cue {cue!r}: use one of {CUES}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} for cue {cue!r}: use one of {MODES}")
        out[cue] = mode
    return out


def cast_of_level(level: float) -> float:
    """Mean red-blue chroma that encodes the level ``L`` (linear map of LEVEL_RANGE onto CAST_RANGE).

    Examples
    --------
    >>> round(cast_of_level(0.30), 3), round(cast_of_level(0.45), 3)
    (0.05, 0.2)
    """
    t = (level - LEVEL_RANGE[0]) / (LEVEL_RANGE[1] - LEVEL_RANGE[0])
    return CAST_RANGE[0] + t * (CAST_RANGE[1] - CAST_RANGE[0])


def decode_level(image: np.ndarray) -> float:
    """The level ``L`` read from an image's mean colour cast (NaN when the cast is absent).

    Parameters
    ----------
    image : array (3, H, W)
        uint8 or float in [0, 1].

    Examples
    --------
    >>> image, mask, meta = draw_cues(np.random.default_rng(0), 64)
    >>> abs(decode_level(image) - meta["level"]) < 0.01
    True
    """
    rgb = _as_float(image)
    luma = rgb.mean(0)
    keep = luma > 0.03
    chroma = (rgb[0] - rgb[2])[keep] / (2.0 * luma[keep])
    cast = float(chroma.mean())
    if cast < CAST_RANGE[0] / 2:
        return float("nan")
    t = (cast - CAST_RANGE[0]) / (CAST_RANGE[1] - CAST_RANGE[0])
    return LEVEL_RANGE[0] + t * (LEVEL_RANGE[1] - LEVEL_RANGE[0])


def _as_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return image.astype(np.float64)


def _paths(rng: np.random.Generator, size: int, starts: np.ndarray, headings: np.ndarray,
           lengths: np.ndarray) -> np.ndarray:
    """Points (K, 2) in pixels of smooth random walks, one per start (fractions of the side)."""
    step = 0.5 / size  # half a pixel, so stamped discs overlap
    n = int(np.ceil(lengths.max() / step))
    turn = np.cumsum(rng.normal(0.0, 0.9 * np.sqrt(step), size=(len(starts), n)), axis=1)
    angle = headings[:, None] + turn
    walk = np.cumsum(step * np.stack([np.sin(angle), np.cos(angle)], -1), axis=1) + starts[:, None]
    keep = np.arange(n)[None, :] * step <= lengths[:, None]
    return walk[keep] * size


def _geometry(rng: np.random.Generator, size: int) -> dict[str, Any]:
    """Source and decoy discs, the foreground mask and the distractor shape (all bool (H, W))."""
    y, x = grid(size)
    radius_px = max(2.0, 0.025 * size)  # half width of a chain
    disc_r = rng.uniform(0.06, 0.08)
    clearance = max(3.0, 0.05 * size)  # minimum gap (px) between foreground and distractors
    # Source near one side, decoy near the opposite one.
    side = rng.uniform(0.12, 0.22)
    angle = rng.uniform(0, 2 * np.pi)
    source = 0.5 + (0.5 - side) * np.array([np.sin(angle), np.cos(angle)])
    decoy = 1.0 - source + rng.uniform(-0.08, 0.08, 2)
    source_disc = np.hypot(y - source[0], x - source[1]) < disc_r
    decoy_disc = np.hypot(y - decoy[0], x - decoy[1]) < disc_r

    def chains(centre: np.ndarray, n: int) -> np.ndarray:
        toward = np.arctan2(0.5 - centre[0], 0.5 - centre[1])
        headings = toward + rng.uniform(-1.1, 1.1, n)
        starts = centre + disc_r * np.stack([np.sin(headings), np.cos(headings)], -1)
        points = _paths(rng, size, starts, headings, rng.uniform(0.35, 0.8, n))
        return stamp_discs(size, points, np.full(len(points), radius_px))

    n_true, n_decoy, n_free = int(rng.integers(2, 5)), int(rng.integers(2, 5)), int(rng.integers(1, 4))
    true = chains(source, n_true)
    true &= ndimage.distance_transform_edt(~decoy_disc) > clearance
    labels, _ = ndimage.label(true | source_disc, structure=np.ones((3, 3)))
    mask = (labels == labels[source_disc].max()) & ~source_disc if source_disc.any() else true
    orphans = true & ~mask
    free_starts = rng.uniform(0.1, 0.9, (n_free, 2))
    free = _paths(rng, size, free_starts, rng.uniform(0, 2 * np.pi, n_free), rng.uniform(0.2, 0.5, n_free))
    distractors = chains(decoy, n_decoy) | orphans | stamp_discs(size, free, np.full(len(free), radius_px))
    distractors &= ~decoy_disc
    distractors &= ndimage.distance_transform_edt(~(mask | source_disc)) > clearance
    return {
        "mask": mask, "distractors": distractors, "source_disc": source_disc, "decoy_disc": decoy_disc,
        "source": source, "decoy": decoy, "disc_r": disc_r, "clearance": clearance,
        "n_true": n_true, "n_decoy": n_decoy, "n_free": n_free,
    }


def render(render_seed: int, size: int, controls: Mapping[str, str] | None = None
           ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render one image from its seed: (image float32 (3, H, W) in [0, 1], mask bool (H, W), meta).

    The geometry (hence the mask), the levels and the noise come from their own streams of
    `render_seed`, so changing `controls` changes only what the controlled cues show.

    Parameters
    ----------
    render_seed : int
        The image's seed (``meta["render_seed"]``).
    size : int
        Image side in pixels.
    controls : mapping cue -> mode, optional
        ``{"local" | "global" | "sequential": "present" | "absent" | "contradicted"}``; missing
        cues are present.

    Examples
    --------
    >>> a, mask_a, _ = render(7, 48)
    >>> b, mask_b, _ = render(7, 48, {"local": "contradicted"})
    >>> bool((mask_a == mask_b).all()), bool((a != b).any())
    (True, True)
    """
    controls = _check_controls(controls)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(render_seed)).spawn(5)]
    geo_rng, level_rng, noise_rng, absent_rng, _ = streams
    geo = _geometry(geo_rng, size)
    mask, distractors = geo["mask"], geo["distractors"]

    # Global cue: a luminance per connected part, above L for the foreground, below for distractors.
    level = float(level_rng.uniform(*LEVEL_RANGE))
    margins = level_rng.uniform(*MARGIN, size=(2, _MAX_PARTS))
    signs = np.where(absent_rng.random((2, _MAX_PARTS)) < 0.5, -1.0, 1.0)
    eight = np.ones((3, 3))
    values = np.zeros((size, size))
    for row, (shape, sign) in enumerate(((mask, 1.0), (distractors, -1.0))):
        labels, _ = ndimage.label(shape, structure=eight)
        part = margins[row] * {"present": sign, "contradicted": -sign, "absent": signs[row]}[controls["global"]]
        values[shape] = level + part[(labels[shape] - 1) % _MAX_PARTS]
    union = mask | distractors
    if union.any():
        nearest = ndimage.distance_transform_edt(~union, return_distances=False, return_indices=True)
        values = values[nearest[0], nearest[1]]

    # Local cue: sharp edges and a checker texture on one class, soft and smooth on the other.
    marked = {"present": mask, "contradicted": distractors, "absent": np.zeros_like(mask)}[controls["local"]]
    plain = union & ~marked
    alpha = np.clip(marked + ndimage.gaussian_filter(plain.astype(np.float64), SOFT_SIGMA), 0.0, 1.0)
    checker = np.where((np.add.outer(np.arange(size), np.arange(size)) % 2) == 0, 1.0, -1.0)
    texture = 1.0 + TEXTURE * checker * marked

    background = BACKGROUND + 0.015 * smooth_noise(noise_rng, size, 0.15)
    luma = background * (1.0 - alpha) + values * texture * alpha

    # The cast: an exact image-mean chroma, hidden locally by zero-mean smooth chroma noise.
    wobble = np.tanh(smooth_noise(noise_rng, size, 0.05))
    wobble -= wobble.mean()
    cast = (cast_of_level(level) if controls["global"] != "absent" else 0.0) + CAST_NOISE * wobble
    rgb = luma[..., None] * (1.0 + cast[..., None] * _CAST_DIR)

    # Sequential cue: the source disc at the source (present), nowhere (absent) or at the decoy.
    disc_at = {"present": geo["source"], "contradicted": geo["decoy"], "absent": None}[controls["sequential"]]
    if disc_at is not None:
        y, x = grid(size)
        r = np.hypot(y - disc_at[0], x - disc_at[1])
        disc_alpha = smoothstep(geo["disc_r"] + 0.5 / size, geo["disc_r"] - 0.5 / size, r)[..., None]
        disc_rgb = DISC_LUMA * (1.0 + cast[..., None] * _CAST_DIR + _DISC_DIR)
        rgb = rgb * (1.0 - disc_alpha) + disc_rgb * disc_alpha
    rgb = rgb + 0.004 * noise_rng.standard_normal(rgb.shape)
    image = np.clip(rgb, 0.0, 1.0).transpose(2, 0, 1).astype(np.float32)
    meta = {
        "render_seed": int(render_seed),
        "controls": controls,
        "level": round(level, 6),
        "source": [round(float(v), 6) for v in geo["source"]],
        "decoy": [round(float(v), 6) for v in geo["decoy"]],
        "disc_radius": round(float(geo["disc_r"]), 6),
        "clearance_px": round(float(geo["clearance"]), 3),
        "chains": geo["n_true"],
        "decoy_chains": geo["n_decoy"],
        "free_distractors": geo["n_free"],
        "fg_fraction": round(float(mask.mean()), 5),
        "distractor_fraction": round(float(distractors.mean()), 5),
    }
    return image, mask, meta


def draw_cues(rng: np.random.Generator, size: int, controls: Mapping[str, str] | None = None
              ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Draw one image: (image float32 (3, H, W) in [0, 1], mask bool (H, W), meta).

    Parameters
    ----------
    rng : numpy.random.Generator
        The image's own stream (only its render seed is drawn from it).
    size : int
        Image side in pixels.
    controls : mapping, optional
        Mode of each cue (see :func:`render`); default: all present. Recorded in ``meta["controls"]``.

    Examples
    --------
    >>> image, mask, meta = draw_cues(np.random.default_rng(0), 48)
    >>> image.shape, image.dtype, mask.shape, meta["controls"]["sequential"]
    ((3, 48, 48), dtype('float32'), (48, 48), 'present')
    """
    return render(int(rng.integers(2**62)), size, controls)


def generate(size: int = 128, seed: int = 0, n: Mapping[str, int] | None = None, regime: str = "mixed"
             ) -> dict[str, Any]:
    """All images of the splits, each from its own stream spawned from `seed`.

    In the ``"mixed"`` regime the first splits (train, val) have their cues mixed per image
    (:func:`training_controls`) and the last (test) shows every cue; in a single-cue regime every
    image shows that cue alone (the other two absent).

    Parameters
    ----------
    size : int
        Image side in pixels.
    seed : int
        Seed the per-image streams (and the train/val cue modes) are spawned from; image k has the
        same geometry whatever the split sizes and the regime.
    n : mapping split -> count, optional
        Split sizes in order; default :data:`SPLITS`.
    regime : {"mixed", "local", "global", "sequential"}
        Which cues the images show (:data:`REGIMES`).

    Returns
    -------
    dict
        ``images`` (uint8 N, 3, size, size), ``masks`` (bool N, size, size), ``ids`` and ``meta``
        (``meta[k]["controls"]``: the cue modes of image k).

    Examples
    --------
    >>> out = generate(32, seed=1, n={"train": 2, "val": 1, "test": 1})
    >>> out["images"].shape, out["images"].dtype, out["ids"][-1]
    ((4, 3, 32, 32), dtype('uint8'), 'cues_0003')
    >>> out["meta"][-1]["controls"]
    {'local': 'present', 'global': 'present', 'sequential': 'present'}
    >>> generate(32, seed=1, n={"test": 1}, regime="global")["meta"][0]["controls"]
    {'local': 'absent', 'global': 'present', 'sequential': 'absent'}
    """
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r} is not supported; expected one of {REGIMES}")
    sizes = list((n or SPLITS).values())
    out = generate_stack("cues", draw_cues, sum(sizes), size, seed, channels_first=True)
    if regime == "mixed":
        mixed = sum(sizes[:-1]) if len(sizes) > 1 else 0
        controls = training_controls(mixed, seed)
    else:
        controls = [{cue: "present" if cue == regime else "absent" for cue in CUES}] * sum(sizes)
    for k, modes in enumerate(controls):
        if modes == out["meta"][k]["controls"]:
            continue
        image, mask, meta = render(out["meta"][k]["render_seed"], size, modes)
        out["images"][k] = np.round(image * 255.0).astype(np.uint8)
        out["meta"][k] = meta
    return out


def training_controls(n: int, seed: int) -> list[dict[str, str]]:
    """Cue modes of `n` train/val images: :data:`TRAIN_ABSENT` absent cues each, drawn from `seed`.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        The dataset's seed (its own stream, apart from the images').

    Examples
    --------
    >>> modes = training_controls(1000, 0)
    >>> counts = [sum(list(c.values()).count("absent") == k for c in modes) for k in (0, 1, 2, 3)]
    >>> [round(c / 1000, 1) for c in counts]
    [0.4, 0.4, 0.2, 0.0]
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x637565]))
    counts, probs = list(TRAIN_ABSENT), list(TRAIN_ABSENT.values())
    out = []
    for _ in range(int(n)):
        k = int(rng.choice(counts, p=probs))
        absent = set(rng.choice(CUES, size=k, replace=False).tolist())
        out.append({cue: "absent" if cue in absent else "present" for cue in CUES})
    return out


def far_from_source(metas: Sequence[Mapping[str, Any]], size: int, far: float = 0.3) -> np.ndarray:
    """Bool (N, size, size): the pixels at least ``far * size`` from each image's source disc centre.

    An RoI there sits at the far end of its chain, so the chain's connection to the source crosses
    several blocks (near the source the sequential cue has no chain to follow).

    Parameters
    ----------
    metas : sequence of dict
        The images' metadata (``source`` in fractions of the side).
    size : int
        Image side in pixels.
    far : float
        Smallest distance from the source centre, as a fraction of the side.

    Examples
    --------
    >>> region = far_from_source([{"source": [0.5, 0.5]}], 32, far=0.25)
    >>> region.shape, bool(region[0, 16, 16]), bool(region[0, 0, 0])
    ((1, 32, 32), False, True)
    """
    y, x = grid(size)
    return np.stack([np.hypot(y - m["source"][0], x - m["source"][1]) >= far for m in metas])


def split_sizes(arrays: dict[str, Any]) -> dict[str, int]:
    """The fixed split sizes, in the order train, val, test.

    Parameters
    ----------
    arrays : dict
        The output of :func:`generate` (unused: the sizes are fixed).

    Examples
    --------
    >>> split_sizes({})
    {'train': 320, 'val': 48, 'test': 64}
    """
    return dict(SPLITS)


def ablate(image: np.ndarray, meta: Mapping[str, Any], cue: str, mode: str = "absent") -> np.ndarray:
    """The image re-rendered with one cue removed (``"absent"``) or contradicted; the mask is unchanged.

    Deterministic from the metadata: the other cues keep their modes from ``meta["controls"]``.

    Parameters
    ----------
    image : array (3, H, W)
        uint8 or float; gives the size and the output dtype (uint8 in, uint8 out; else float32).
    meta : mapping
        The image's metadata (``render_seed`` and ``controls``).
    cue : {"local", "global", "sequential"}
    mode : {"absent", "contradicted", "present"}

    Examples
    --------
    >>> image, mask, meta = draw_cues(np.random.default_rng(3), 48)
    >>> np.array_equal(ablate(image, meta, "global", "present"), image)
    True
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
        raise ValueError(f"image must be (3, H, H), got {image.shape}")
    controls = dict(meta.get("controls", {}))
    controls[cue] = mode
    out, _, _ = render(int(meta["render_seed"]), image.shape[-1], _check_controls(controls))
    if image.dtype == np.uint8:
        return np.round(out * 255.0).astype(np.uint8)
    return out


def ablate_batch(images: np.ndarray, metas: Sequence[Mapping[str, Any]], cue: str, mode: str = "absent"
                 ) -> np.ndarray:
    """:func:`ablate` on a stack (N, 3, H, W); same dtype convention.

    Parameters
    ----------
    images : array (N, 3, H, W)
        Images of the set (uint8 or float in [0, 1]).
    metas : sequence of dict
        Their metadata, one per image.
    cue : {"local", "global", "sequential"}
        The cue to remove or contradict.
    mode : {"absent", "contradicted"}
        What happens to the cue.
    """
    images = np.asarray(images)
    return np.stack([ablate(im, m, cue, mode) for im, m in zip(images, metas, strict=True)])


def dice(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image Dice of bool stacks (N, H, W); 1 where both are empty.

    Parameters
    ----------
    pred, target : bool arrays (N, H, W)
        Predicted and reference masks.

    Examples
    --------
    >>> a = np.zeros((2, 2, 2), bool); a[0, 0] = True
    >>> dice(a, a).tolist(), dice(a, np.zeros_like(a)).tolist()
    ([1.0, 1.0], [0.0, 1.0])
    """
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    inter = (pred & target).sum((-2, -1))
    total = pred.sum((-2, -1)) + target.sum((-2, -1))
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def cue_reliance(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    masks: np.ndarray,
    metas: Sequence[Mapping[str, Any]],
    cues: Sequence[str] = CUES,
    mode: str = "absent",
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Any:
    """A model's reliance on each cue: the drop in Dice when that cue is ablated, per image and mean.

    Parameters
    ----------
    predict : callable
        ``predict(images (N, 3, H, W)) -> bool masks (N, H, W)``; it gets images in the dtype given.
    images, masks, metas
        The images (N, 3, H, W), their masks (N, H, W) and metadata (from this generator).
    cues : sequence of str
        Cues to ablate.
    mode : {"absent", "contradicted"}
        How each cue is ablated.
    n_boot, level, seed
        Percentile bootstrap over images of the mean drop (:func:`pdcr_lab.statistics.bootstrap_interval`).

    Returns
    -------
    xarray.Dataset
        ``dice`` (image): Dice on the unablated images; ``dice_ablated``, ``drop`` (cue, image);
        ``drop_mean``, ``drop_low``, ``drop_high`` (cue); ``dice_mean``, ``dice_low``,
        ``dice_high`` (scalars); attrs ``mode``, ``level``, ``n_boot``.
    """
    import xarray as xr

    from ..statistics import bootstrap_interval

    for cue in cues:
        _check_controls({cue: mode})
    images, masks = np.asarray(images), np.asarray(masks, bool)
    if len(images) != len(masks) or len(masks) != len(metas):
        raise ValueError("images, masks and metas must have the same length")
    base = dice(np.asarray(predict(images), bool), masks)
    ablated = np.stack([dice(np.asarray(predict(ablate_batch(images, metas, cue, mode)), bool), masks)
                        for cue in cues])
    drop = base[None] - ablated
    rng = np.random.default_rng(seed)
    drop_ci = bootstrap_interval([drop], n_boot=n_boot, level=level, rng=rng)
    base_ci = bootstrap_interval([base], n_boot=n_boot, level=level, rng=rng)
    ids = [str(m.get("render_seed", k)) for k, m in enumerate(metas)]
    return xr.Dataset(
        {
            "dice": ("image", base),
            "dice_ablated": (("cue", "image"), ablated),
            "drop": (("cue", "image"), drop),
            "drop_mean": ("cue", drop_ci[:, 0]),
            "drop_low": ("cue", drop_ci[:, 1]),
            "drop_high": ("cue", drop_ci[:, 2]),
            "dice_mean": base_ci[0],
            "dice_low": base_ci[1],
            "dice_high": base_ci[2],
        },
        coords={"cue": list(cues), "image": ids},
        attrs={"mode": mode, "level": level, "n_boot": n_boot},
    )


_EIGHT = np.ones((3, 3), dtype=bool)


# -- oracle predictors: each decides the foreground by one cue alone --------------------------------

def _channels(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rgb = images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)
    return rgb, rgb.mean(1)


def _disc(rgb: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """The green source disc, dilated over its soft edge."""
    green = (rgb[1] - 0.5 * (rgb[0] + rgb[2])) > 0.3 * luma
    return ndimage.binary_dilation(green & (luma > 0.15), _EIGHT, iterations=1)


def _parts(rgb: np.ndarray, luma: np.ndarray) -> tuple[np.ndarray, int]:
    """Structure pixels and their 8-connected parts: brighter than the background and not the disc,
    then cut at each part's half level (between the background and the part's luminance), so that
    soft and sharp edges give the same extent."""
    candidates = (luma > 0.11) & ~_disc(rgb, luma)
    labels, n = ndimage.label(candidates, structure=_EIGHT)
    if n == 0:
        return labels, n
    smooth = ndimage.uniform_filter(luma, 3)
    peak = np.asarray(ndimage.labeled_comprehension(smooth, labels, np.arange(1, n + 1),
                                                    lambda v: np.percentile(v, 80), float, 0.0))
    half = np.concatenate([[np.inf], (BACKGROUND + peak) / 2])
    return ndimage.label(candidates & (luma > half[labels]), structure=_EIGHT)


def _keep(labels: np.ndarray, n: int, decide: Callable[[np.ndarray], bool]) -> np.ndarray:
    keep = np.zeros(n + 1, bool)
    for k in range(1, n + 1):
        keep[k] = decide(labels == k)
    return keep[labels]


def oracle_local(images: np.ndarray) -> np.ndarray:
    """Foreground = parts with a pixel-scale checker texture (a 2 x 2 diagonal filter)."""
    out = []
    for image in images:
        rgb, luma = _channels(image[None])
        rgb, luma = rgb[0], luma[0]
        response = np.abs(luma[:-1, :-1] - luma[1:, :-1] - luma[:-1, 1:] + luma[1:, 1:]) / 4
        response = np.pad(response, ((0, 1), (0, 1)))
        labels, n = _parts(rgb, luma)
        out.append(_keep(labels, n, lambda part: np.median(response[part]) > 0.02))
    return np.stack(out)


def oracle_global(images: np.ndarray) -> np.ndarray:
    """Foreground = parts whose luminance is above the level decoded from the image-mean cast."""
    out = []
    for image in images:
        level = decode_level(image)
        level = float(np.mean(LEVEL_RANGE)) if np.isnan(level) else level
        rgb, luma = _channels(image[None])
        rgb, luma = rgb[0], luma[0]
        smooth = ndimage.uniform_filter(luma, 3)
        labels, n = _parts(rgb, luma)
        out.append(_keep(labels, n, lambda part: np.percentile(smooth[part], 80) > level))
    return np.stack(out)


def oracle_sequential(images: np.ndarray) -> np.ndarray:
    """Foreground = parts connected (bridging 1 px) to the source disc."""
    out = []
    for image in images:
        rgb, luma = _channels(image[None])
        rgb, luma = rgb[0], luma[0]
        disc = ndimage.binary_dilation(_disc(rgb, luma), _EIGHT, iterations=1)
        labels, n = _parts(rgb, luma)
        out.append(_keep(labels, n, lambda part: bool((part & disc).any())))
    return np.stack(out)


#: One oracle per cue: ``ORACLES[cue](images (N, 3, H, W)) -> bool masks (N, H, W)``; a model whose
#: reliance is known by construction (tests, and the ground truth of :func:`cue_reliance`).
ORACLES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "local": oracle_local, "global": oracle_global, "sequential": oracle_sequential}
