"""The explainer contract and the one registry of explainers.

Every explainer of the project (PdCR on input blocks, the baselines, and any a user brings) is a
callable with one signature, :class:`Explainer`::

    explainer(model, image, *, roi, target=None, seed=0, device=None, **options) -> xarray.Dataset

returning the effects schema (:mod:`pdcr_lab.schema`) with ``attrs["method"]`` naming it. The
registry records what a caller must know about each one besides its code, once:

==============  ==========================================================================
property        meaning
==============  ==========================================================================
support_sign    which sign of ``ate`` means "the block supports the RoI" (-1: PdCR's
                convention, negative ATE; +1: saliency-style maps; 0: unknown)
multi_roi       a list of RoIs is explained in one call sharing its forward passes
deterministic   the map does not depend on the seed (no random draws)
perturbs        what the method changes to measure an effect (``"input blocks"``,
                ``"input pixels"``, ``"nothing (gradients)"``, ...)
on_grid         the map is one value per input block (``block_y``, ``block_x``); False for
                component effects, which have a ``layer`` dim instead
defaults        options fixed by the entry (e.g. ``occluder="blur"``); a caller's override them
==============  ==========================================================================

The sweep, the faithfulness study, the dashboard and the CLI read this registry; adding a method
is one :func:`register_explainer` call. A name may also be an import path
``"package.module:function"``: the function is then used with the properties it declares as
attributes (``support_sign``, ``multi_roi``, ``deterministic``, ``perturbs``), unknown otherwise.

Examples
--------
>>> from pdcr_lab.explainers import get_explainer, list_explainers
>>> "pdcr" in list_explainers() and "rise" in list_explainers()
True
>>> spec = get_explainer("occlusion_blur")
>>> spec.support_sign, spec.deterministic, dict(spec.defaults)
(-1, True, {'occluder': 'blur'})
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import torch
import xarray as xr
from torch import nn

from .rois import Roi
from .schema import validate

__all__ = [
    "Explainer",
    "ExplainerSpec",
    "register_explainer",
    "get_explainer",
    "list_explainers",
    "explainers_table",
    "import_object",
    "accepted_parameters",
    "parameter_default",
    "SUPPLIED",
]

#: Arguments a caller of the registry (a sweep, a study) supplies itself; entries may not fix them.
SUPPLIED: tuple[str, ...] = ("model", "image", "roi", "target", "seed", "bank", "block", "device", "progress")


@runtime_checkable
class Explainer(Protocol):
    """The one call signature of every explainer.

    Parameters
    ----------
    model : torch.nn.Module
        The explained segmentation model.
    image : Tensor or array (C, H, W)
        Float pixel values in [0, 1].
    roi : box, mask or list of them
        As in :func:`pdcr_lab.explain`.
    target : array (H, W), optional
        Ground truth; None: the model's factual prediction is the reference.
    seed : int
        Seed of every random choice; recorded in the result.
    device : str or torch.device, optional
        Where to run; the model comes back to its own device.
    **options
        The explainer's own keyword-only options.
    """

    def __call__(self, model: nn.Module, image: Any, *, roi: Roi, target: Any = None, seed: int = 0,
                 device: str | torch.device | None = None, **options: Any) -> xr.Dataset: ...


@dataclass(frozen=True)
class ExplainerSpec:
    """A registered explainer: the function and what a caller must know about it.

    Parameters
    ----------
    name : str
        Registry name (or the import path it was resolved from).
    func : Explainer
        The function.
    support_sign : {-1, 1, 0}
        Sign of ``ate`` that means "supports the RoI" (0: unknown).
    multi_roi : bool
        A list of RoIs shares one call's forward passes (the result has a ``roi`` dim).
    deterministic : bool
        The map does not depend on the seed.
    perturbs : str
        What the method changes to measure an effect.
    description : str
        One line for tables.
    defaults : mapping
        Options fixed by the entry; a caller's options override them.
    on_grid : bool
        The map is one value per input block (False: component effects with a ``layer`` dim).
    """

    name: str
    func: Callable[..., xr.Dataset]
    support_sign: int = 0
    multi_roi: bool = False
    deterministic: bool = False
    perturbs: str = "unknown"
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    on_grid: bool = True

    @property
    def parameters(self) -> set[str] | None:
        """Keyword names `func` accepts; None when it takes ``**kwargs``."""
        return accepted_parameters(self.func)

    def accepts(self, name: str) -> bool:
        """Whether `func` takes a keyword argument `name`.

        Parameters
        ----------
        name : str
            The keyword.
        """
        params = self.parameters
        return params is None or name in params

    def explain(self, model: nn.Module, image: Any, *, roi: Roi, **options: Any) -> xr.Dataset:
        """Call the explainer with the entry's defaults under the caller's options.

        The result is validated, and its ``support_sign`` attr is set from the entry (or checked
        against it when the explainer records its own).

        Parameters
        ----------
        model : torch.nn.Module
            The explained model.
        image : Tensor or array (C, H, W)
            The image.
        roi : box, mask or list of them
            The RoI(s).
        **options
            Keyword arguments for the explainer (``target``, ``seed``, ``device``, its own options).

        Examples
        --------
        >>> import torch
        >>> from pdcr_lab.explainers import get_explainer
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Sigmoid())
        >>> ds = get_explainer("occlusion_zero").explain(net, torch.rand(1, 16, 16), roi=(4, 4, 4, 4), block=4)
        >>> ds.attrs["method"], ds.attrs["support_sign"]
        ('occlusion_zero', -1)
        """
        ds = self.func(model, image, roi=roi, **{**self.defaults, **options})
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"explainer {self.name!r} returned {type(ds).__name__}, expected an xarray.Dataset")
        recorded = ds.attrs.get("support_sign")
        if recorded is None:
            ds.attrs["support_sign"] = self.support_sign
        elif self.support_sign and int(recorded) != self.support_sign:
            raise ValueError(
                f"explainer {self.name!r} is registered with support_sign={self.support_sign} but its result "
                f"records support_sign={recorded}; fix the registration"
            )
        return validate(ds)


_REGISTRY: dict[str, ExplainerSpec] = {}


def register_explainer(
    name: str,
    func: Callable[..., xr.Dataset],
    *,
    support_sign: int,
    multi_roi: bool = False,
    deterministic: bool = False,
    perturbs: str = "unknown",
    description: str = "",
    on_grid: bool = True,
    **defaults: Any,
) -> ExplainerSpec:
    """Add an explainer to the registry (replacing an entry of the same name).

    A method registered in a notebook also works in a sweep on a cluster: the resolved function
    travels to the workers with each task (by reference when importable, by value otherwise).

    Parameters
    ----------
    name : str
        Registry name (no ``:``, which marks import paths).
    func : Explainer
        The function, with the :class:`Explainer` signature.
    support_sign : {-1, 1, 0}
        Sign of ``ate`` that means "supports the RoI" (0: unknown).
    multi_roi : bool
        A list of RoIs shares one call's forward passes.
    deterministic : bool
        The map does not depend on the seed.
    perturbs : str
        What the method changes to measure an effect.
    description : str
        One line for tables.
    on_grid : bool
        The map is one value per input block (False for component effects).
    **defaults
        Options fixed by the entry (they must not be the ones callers supply, :data:`SUPPLIED`).

    Examples
    --------
    >>> import pdcr_lab
    >>> from pdcr_lab.explainers import register_explainer
    >>> spec = register_explainer("pdcr_blur", pdcr_lab.explain, support_sign=-1, multi_roi=True,
    ...                           deterministic=True, perturbs="input blocks", intervention="blur")
    >>> spec.defaults
    mappingproxy({'intervention': 'blur'})
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name={name!r} must be a non-empty string without ':' (':' marks import paths)")
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if support_sign not in (-1, 0, 1) or isinstance(support_sign, bool):
        raise ValueError(f"support_sign={support_sign!r} must be -1, 1 or 0 (unknown)")
    fixed = sorted(set(defaults) & set(SUPPLIED))
    if fixed:
        raise ValueError(f"defaults {fixed} are supplied by every caller and cannot be fixed by an entry")
    params = accepted_parameters(func)
    unknown = sorted(set(defaults) - params) if params is not None else []
    if unknown:
        raise TypeError(f"defaults {unknown} are not parameters of {getattr(func, '__name__', func)!r}")
    spec = ExplainerSpec(name, func, int(support_sign), bool(multi_roi), bool(deterministic), str(perturbs),
                         str(description), MappingProxyType(dict(defaults)), bool(on_grid))
    _REGISTRY[name] = spec
    return spec


def list_explainers() -> list[str]:
    """The registered names, sorted.

    Examples
    --------
    >>> from pdcr_lab.explainers import list_explainers
    >>> list_explainers()[:3]
    ['components', 'gradcam', 'gradcam_signed']
    """
    return sorted(_REGISTRY)


def get_explainer(name: str) -> ExplainerSpec:
    """The entry of a registered name, or of an import path ``"package.module:function"``.

    Parameters
    ----------
    name : str
        A name of :func:`list_explainers`, or an import path.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        func = import_object(name)
        if not callable(func):
            raise TypeError(f"{name!r} is not callable")
        return ExplainerSpec(
            name, func, support_sign=int(getattr(func, "support_sign", 0)),
            multi_roi=bool(getattr(func, "multi_roi", False)), deterministic=bool(getattr(func, "deterministic", False)),
            perturbs=str(getattr(func, "perturbs", "unknown")), on_grid=bool(getattr(func, "on_grid", True)),
        )
    raise KeyError(f"unknown explainer {name!r}; registered: {list_explainers()}, or give an import path 'module:function'")


def explainers_table() -> str:
    """A Markdown table of the registry (name, sign, multi-RoI, deterministic, perturbs, description).

    Examples
    --------
    >>> from pdcr_lab.explainers import explainers_table
    >>> print(explainers_table().splitlines()[0])
    | explainer | support sign | multi-RoI shared | deterministic | perturbs | description |
    """
    rows = ["| explainer | support sign | multi-RoI shared | deterministic | perturbs | description |",
            "|---|---|---|---|---|---|"]
    for name in list_explainers():
        s = _REGISTRY[name]
        sign = {-1: "negative", 1: "positive", 0: "unknown"}[s.support_sign]
        rows.append(f"| `{name}` | {sign} | {'yes' if s.multi_roi else 'no'} | {'yes' if s.deterministic else 'no'} "
                    f"| {s.perturbs} | {s.description} |")
    return "\n".join(rows)


def import_object(path: str) -> Any:
    """The object named by ``"package.module:attribute"`` (the attribute may be dotted).

    Importing runs the module's code: only name modules you trust.

    Parameters
    ----------
    path : str
        The import path.

    Examples
    --------
    >>> from pdcr_lab.explainers import import_object
    >>> import_object("pdcr_lab.defaults:PAPER.block")
    8
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import module {module_name!r} of {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})") from None
    return obj


def accepted_parameters(func: Callable[..., Any]) -> set[str] | None:
    """Keyword names `func` accepts; None when it takes ``**kwargs`` (anything goes).

    Parameters
    ----------
    func : callable
        The function.
    """
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def parameter_default(func: Callable[..., Any], name: str) -> Any:
    """The default of parameter `name` of `func`, or None when it has none.

    Parameters
    ----------
    func : callable
        The function.
    name : str
        The parameter.
    """
    try:
        param = inspect.signature(func).parameters.get(name)
    except (TypeError, ValueError):
        return None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _register_builtins() -> None:
    from .baselines import gradcam, misure, occlusion, random_scores, rise
    from .components import explain_components
    from .engine import explain

    blocks = "input blocks"
    register_explainer("pdcr", explain, support_sign=-1, multi_roi=True, perturbs=blocks,
                       description="PdCR: ATE of natural block replacement, coarse-to-fine screening (the paper)")
    register_explainer("zero", explain, support_sign=-1, multi_roi=True, deterministic=True, perturbs=blocks,
                       intervention="zero", description="the reference's ablation: PdCR's estimator with black blocks")
    register_explainer("occlusion", occlusion, support_sign=-1, multi_roi=True, deterministic=True, perturbs=blocks,
                       description="occlusion with the `occluder` option (default zero), no screening")
    for occluder in ("zero", "blur", "mean"):
        register_explainer(f"occlusion_{occluder}", occlusion, support_sign=-1, multi_roi=True, deterministic=True,
                           perturbs=blocks, occluder=occluder,
                           description=f"change of the RoI outcome when one block is {occluder}-occluded")
    register_explainer("gradcam", gradcam, support_sign=1, multi_roi=True, deterministic=True,
                       perturbs="nothing (gradients)", description="Seg-Grad-CAM, ReLU of the class activation map")
    register_explainer("gradcam_signed", gradcam, support_sign=1, multi_roi=True, deterministic=True,
                       perturbs="nothing (gradients)", relu=False, description="Seg-Grad-CAM without the ReLU")
    register_explainer("misure", misure, support_sign=1, multi_roi=True, deterministic=True,
                       perturbs="input pixels (blended masks)", description="MiSuRe: minimally sufficient region mask")
    # RISE keeps the blocks of every RoI of a call unmasked, so a list of RoIs changes each RoI's
    # map at the others' blocks: callers of the registry explain one RoI per call.
    register_explainer("rise", rise, support_sign=1, multi_roi=False, perturbs="input pixels (random masks)",
                       description="RISE: random masks weighted by the RoI outcome")
    register_explainer("components", explain_components, support_sign=-1, multi_roi=True, on_grid=False,
                       perturbs="network components (layer outputs)",
                       description="PdCR on layers, channel groups or feature cells (donor activations)")
    register_explainer("random", random_scores, support_sign=1, multi_roi=True, perturbs="nothing",
                       description="a random map: the control every faithfulness score must beat")


_register_builtins()
