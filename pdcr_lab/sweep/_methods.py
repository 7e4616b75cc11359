"""The sweep's method registry: a name -> an explainer with the project's common call signature.

Every explainer is called as ``f(model, image, *, roi, target, seed, **params)`` and returns an
effects dataset (:mod:`pdcr_lab.schema`). The sweep also passes ``bank``, ``block`` and ``device``
to explainers whose signature has them. A config names a method by its registered name or by an
import path ``"package.module:function"`` (how users bring their own explainers, and how the
baselines can be used before they are registered).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Method", "register_method", "get_method", "list_methods", "import_object", "accepted_parameters"]

#: Arguments the sweep itself supplies to every explainer; a config may not set them.
SUPPLIED = ("model", "image", "roi", "target", "seed", "bank", "block", "device", "progress")


@dataclass(frozen=True)
class Method:
    """A registered explainer.

    Parameters
    ----------
    name : str
        Registry name (or the import path it was resolved from).
    func : callable
        ``func(model, image, *, roi, target, seed, **params) -> xarray.Dataset``.
    multi_roi : bool
        True when `func` accepts a list of RoIs in one call (sharing its forward passes) and then
        returns a ``roi`` dim; otherwise the sweep calls it once per RoI and stacks the results.
    support_sign : {-1, 1, 0}
        Which sign of ``ate`` means "the block supports the RoI" (PdCR: -1; 0: unknown). Stored as a
        coordinate along ``method`` and checked against each result's ``attrs["support_sign"]``.
    defaults : dict
        Keyword arguments fixed by the registration (e.g. ``intervention="zero"``); a config's own
        parameters override them.
    """

    name: str
    func: Callable[..., Any]
    multi_roi: bool = False
    support_sign: int = -1
    defaults: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Method] = {}


def register_method(name: str, func: Callable[..., Any], *, multi_roi: bool = False, support_sign: int = -1,
                    **defaults: Any) -> Method:
    """Make an explainer available to sweep configs under `name`.

    Registration happens in the process that runs the driver; the resolved function travels to the
    workers with each task (by reference when importable, by value otherwise), so a method
    registered in a notebook works on a cluster too.

    Examples
    --------
    >>> import pdcr_lab
    >>> from pdcr_lab.sweep import register_method, get_method
    >>> _ = register_method("pdcr_blur", pdcr_lab.explain, multi_roi=True, intervention="blur")
    >>> get_method("pdcr_blur").defaults
    {'intervention': 'blur'}
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name={name!r} must be a non-empty string without ':' (':' marks import paths)")
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if support_sign not in (-1, 0, 1):
        raise ValueError(f"support_sign={support_sign!r} must be -1, 1 or 0 (unknown)")
    method = Method(name, func, bool(multi_roi), int(support_sign), dict(defaults))
    _REGISTRY[name] = method
    return method


def list_methods() -> list[str]:
    """Names accepted in a config's ``methods`` section (besides import paths)."""
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    """Resolve a registered name or a ``"module:function"`` import path to a :class:`Method`."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        func = import_object(name)
        if not callable(func):
            raise TypeError(f"{name!r} is not callable")
        return Method(name, func, multi_roi=bool(getattr(func, "multi_roi", False)),
                      support_sign=int(getattr(func, "support_sign", 0)))
    raise KeyError(f"unknown method {name!r}; registered: {list_methods()}, or give an import path 'module:function'")


def import_object(path: str) -> Any:
    """The object named by ``"package.module:attribute"`` (attribute may be dotted)."""
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
    """Keyword names `func` accepts; None when it takes ``**kwargs`` (anything goes)."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def parameter_default(func: Callable[..., Any], name: str) -> Any:
    """The default of parameter `name` of `func`, or None when it has none."""
    try:
        param = inspect.signature(func).parameters.get(name)
    except (TypeError, ValueError):
        return None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _register_builtins() -> None:
    from ..engine import explain

    register_method("pdcr", explain, multi_roi=True)
    # The reference's ablation (docs/method.md section 5): the block set to 0, one forward per block.
    register_method("zero", explain, multi_roi=True, intervention="zero")
    try:  # the baselines (Seg-Grad-CAM, MiSuRe, occlusion, RISE) share the signature and take RoI lists
        from ..baselines import BASELINES
    except ImportError:  # pragma: no cover - a partial install
        return
    # Signs as documented in pdcr_lab.baselines (support_sign of each map).
    signs = {"gradcam": 1, "misure": 1, "occlusion": -1, "rise": 1}
    for name, func in BASELINES.items():
        register_method(name, func, multi_roi=True, support_sign=signs.get(name, 0))


_register_builtins()
