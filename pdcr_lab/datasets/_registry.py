"""The embedded datasets: names, generators, fixed splits, and the cached ``load`` entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..checks import check_choice, check_int
from . import _brain, _brain3d, _cues, _lesions, _vessels, _vessels3d
from ._cache import cached_arrays
from ._data import SegmentationData, from_arrays
from ._synth import generate_stack

__all__ = ["list_datasets", "load"]


@dataclass(frozen=True)
class _Spec:
    make: Callable[[int, int], dict[str, Any]]
    version: int
    split_sizes: Callable[[dict[str, Any]], dict[str, int]]
    description: str
    generator: str
    ndim: int = 2  # spatial dimensions: 2 (images) or 3 (volumes)
    size: int = 96  # working size, the default side of `load`


# Fixed split sizes of the generated sets: 320 images to cut the bank from (and to train small
# models on), 48 to validate and 48 to explain.
_N = {"train": 320, "val": 48, "test": 48}


def _generated(name: str, module: Any, draw: str, description: str) -> _Spec:
    """A generated set: `n` images from ``module.<draw>``, cut into the fixed splits."""
    return _Spec(
        make=lambda size, seed: generate_stack(name, getattr(module, draw), sum(_N.values()), size, seed),
        version=module.VERSION,
        split_sizes=lambda arrays: dict(_N),
        description=description,
        generator=f"{module.__name__}.{draw}",
    )


_SPECS: dict[str, _Spec] = {
    "lesions": _generated(
        "lesions",
        _lesions,
        "draw_lesion",
        "Synthetic dermoscopy-like images (stand-in for HAM10000): textured skin of varied tone, "
        "hairs, vignetting, one irregular pigmented lesion per image with sharp or blurred border; "
        "mask = the exact lesion shape. RGB.",
    ),
    "vessels": _generated(
        "vessels",
        _vessels,
        "draw_fundus",
        "Synthetic fundus-like images (stand-in for FIVES): circular field of view, optic disc, fovea, "
        "a branching tapering vessel tree from the disc; mask = the exact vessel pixels. RGB.",
    ),
    "brain": _Spec(
        make=_brain.slices,
        version=_brain.VERSION,
        split_sizes=_brain.split_sizes,
        description=_brain.DESCRIPTION,
        generator="pdcr_lab.datasets._brain.slices (nilearn MNI152 template)",
    ),
    "cues": _Spec(
        make=lambda size, seed: _cues.generate(size, seed),
        version=_cues.VERSION,
        split_sizes=_cues.split_sizes,
        description=_cues.DESCRIPTION,
        generator="pdcr_lab.datasets._cues.generate",
        size=128,
    ),
    **{
        f"cues_{cue}": _Spec(
            make=lambda size, seed, cue=cue: _cues.generate(size, seed, regime=cue),
            version=_cues.VERSION,
            split_sizes=_cues.split_sizes,
            description=_cues.DESCRIPTION + f" This variant shows the {cue} cue alone in every split "
            "(the other two absent): a model that solves it must use that cue.",
            generator=f"pdcr_lab.datasets._cues.generate(regime={cue!r})",
            size=128,
        )
        for cue in ("global", "sequential")
    },
    "brain3d": _Spec(
        make=_brain3d.cubes,
        version=_brain3d.VERSION,
        split_sizes=_brain3d.split_sizes,
        description=_brain3d.DESCRIPTION,
        generator="pdcr_lab.datasets._brain3d.cubes (nilearn MNI152 template, 2 mm)",
        ndim=3,
        size=32,
    ),
    "vessels3d": _Spec(
        make=_vessels3d.generate,
        version=_vessels3d.VERSION,
        split_sizes=_vessels3d.split_sizes,
        description=_vessels3d.DESCRIPTION,
        generator="pdcr_lab.datasets._vessels3d.generate",
        ndim=3,
        size=32,
    ),
}


def list_datasets(ndim: int | None = None) -> list[str]:
    """Names accepted by :func:`load`.

    Parameters
    ----------
    ndim : {None, 2, 3}
        Only the image (2) or volume (3) sets; default: all.

    Examples
    --------
    >>> list_datasets(ndim=3)
    ['brain3d', 'vessels3d']
    """
    if ndim is not None:
        ndim = check_choice("ndim", ndim, (2, 3))
    return [name for name, spec in _SPECS.items() if ndim in (None, spec.ndim)]


def load(name: str, *, size: int | None = None, seed: int = 0, cache: bool = True) -> SegmentationData:
    """Load an embedded dataset (no download), generating and caching it on first use.

    Parameters
    ----------
    name : {"lesions", "vessels", "brain", "cues", "cues_global", "cues_sequential", "brain3d", "vessels3d"}
        ``"lesions"``: dermoscopy-like, ``"vessels"``: fundus-like (both generated, 3 channels,
        splits train/val/test = 320/48/48); ``"brain"``: axial slices of nilearn's MNI152 template
        with a grey-matter mask (1 channel; splits are disjoint slice ranges of one averaged brain);
        ``"cues"``: generated chains whose foreground three controllable cues decide (3 channels,
        splits 320/48/64, working size 128; see :mod:`pdcr_lab.datasets._cues`); ``"cues_global"``,
        ``"cues_sequential"``: the same images showing one cue alone.
        Volumes (1 channel, (N, 1, D, H, W)): ``"brain3d"``: cubes of the MNI152 template with a
        grey-matter mask (splits are disjoint regions of one averaged brain); ``"vessels3d"``:
        generated vessel trees in a noisy volume (splits 160/24/24).
    size : int, optional
        Image side in pixels, or volume side in voxels; default: the set's working size, 96 for
        images (128 for ``"cues"``) and 32 for volumes (tests use 32 or 48 for images, 16 for volumes).
    seed : int
        Seed of the generated images (the brain slices and cubes do not depend on it) and of the
        bank draw.
    cache : bool
        Read/write the cache in ``$PDCR_LAB_CACHE`` (default ``~/.cache/pdcr_lab``), one file per
        name, generator version, size and seed; an unreadable cache file is regenerated.

    Returns
    -------
    SegmentationData
        Images, masks, ids and metadata per split; ``.bank`` is cut from the train split only
        (block ``size // 12``, 8 at 96; cubes of side ``size // 8`` for volumes, 4 at 32),
        ``.info`` describes the generator (``"ndim"``: 2 or 3).

    Examples
    --------
    >>> data = load("lesions", size=48)
    >>> data.splits, tuple(data.images("test").shape)
    (('train', 'val', 'test'), (48, 3, 48, 48))
    """
    spec = _SPECS[check_choice("name", name, _SPECS)]
    size = check_int("size", spec.size if size is None else size, minimum=16)
    seed = check_int("seed", seed, minimum=0)
    key = f"{name}-v{spec.version}-size{size}-seed{seed}"
    arrays = cached_arrays(key, lambda: spec.make(size, seed), cache=bool(cache))
    split_sizes = spec.split_sizes(arrays)
    info = {
        "name": name,
        "generator": spec.generator,
        "version": spec.version,
        "seed": seed,
        "size": size,
        "channels": int(arrays["images"].shape[1]),
        "ndim": spec.ndim,
        "splits": split_sizes,
        "description": spec.description,
    }
    return from_arrays(name, arrays["images"], arrays["masks"], arrays["ids"], arrays["meta"], split_sizes, info, seed)
