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

import collections.abc
import importlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, Union, get_args, get_origin, runtime_checkable

import torch
import xarray as xr
from torch import nn

from .checks import check_choice, check_float, check_int, describe
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
    "OptionError",
    "register_option_check",
    "check_device",
    "check_annotation",
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

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate options for `func` without running a model; return them over the entry's defaults.

        The explainer's own checks decide, not a copy of them: each option's value is checked
        against the annotation (or the default's type) of `func`'s parameter (an ``int`` refuses
        ``"6"`` and ``1.5``, a ``float`` refuses NaN and Inf, a ``Literal`` refuses values it does
        not list), then the checks registered for `func` with :func:`register_option_check` run
        (for the built-in explainers: :func:`pdcr_lab.engine.check_options` and :func:`pdcr_lab.call.check_shared_options`,
        which call the checks the explainers run on every call). A ``device`` option is checked
        with :func:`check_device`.

        Parameters
        ----------
        options : mapping
            Keyword options for `func` (not the arguments every caller supplies: model, image, roi, ...).

        Returns
        -------
        dict
            The entry's defaults updated with `options` (values unchanged).

        Raises
        ------
        OptionError
            A ``ValueError`` (and ``TypeError``) whose ``key`` names the option (None when a
            combination of options is refused) and whose message says what was expected.

        Examples
        --------
        >>> from pdcr_lab.explainers import OptionError, get_explainer
        >>> get_explainer("pdcr").check_options({"fine": 12, "tau": 0.5})
        {'fine': 12, 'tau': 0.5}
        >>> try:
        ...     get_explainer("pdcr").check_options({"fine": "6"})
        ... except OptionError as exc:
        ...     print(exc.key, "|", exc)
        fine | fine must be an integer, got '6'
        """
        merged = {**self.defaults, **dict(options)}
        try:
            params = inspect.signature(self.func).parameters
        except (TypeError, ValueError):  # a callable without a signature: only its registered checks
            params = MappingProxyType({})
        accepted = self.parameters
        for key in merged:
            if accepted is not None and key not in accepted:
                raise OptionError(f"{key!r} is not an option of {self.name!r}; its options: "
                                  f"{sorted(accepted - set(SUPPLIED))}", key, merged[key])
        hints = _type_hints(self.func)
        for key, value in merged.items():
            param = params.get(key)
            if param is None or param.kind is inspect.Parameter.VAR_KEYWORD:
                continue  # goes to **kwargs: the registered checks know it
            hint = hints.get(key, param.annotation)
            if hint is inspect.Parameter.empty:
                hint = _default_type(param.default)
            _option(key, value, lambda k=key, v=value, h=hint: check_annotation(k, v, h))
        if "device" in merged:
            _option("device", merged["device"], lambda: check_device(merged["device"]))
        check = _OPTION_CHECKS.get(self.func)
        if check is not None:
            for key, value in merged.items():  # one at a time first, so that the error names its option
                _option(key, value, lambda k=key, v=value: check({k: v}))
            _option(None, None, lambda: check(merged))
        return merged

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


# -- checking options without a model -----------------------------------------------------------------


class OptionError(ValueError, TypeError):
    """An explainer option is refused (:meth:`ExplainerSpec.check_options`).

    Both a ``ValueError`` and a ``TypeError``, so that callers catching either keep working.

    Parameters
    ----------
    message : str
        What is wrong and what was expected.
    key : str, optional
        The option (None: a combination of options).
    value : object
        The refused value.
    """

    def __init__(self, message: str, key: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


#: func -> check(options) registered with register_option_check.
_OPTION_CHECKS: dict[Callable[..., Any], Callable[[Mapping[str, Any]], None]] = {}


def register_option_check(func: Callable[..., Any], check: Callable[[Mapping[str, Any]], None]) -> None:
    """Register the checks of `func`'s options that run without a model.

    :meth:`ExplainerSpec.check_options` calls ``check(options)`` with each option alone (so that an
    error names it) and then with all of them; `check` raises ``ValueError`` or ``TypeError`` for a
    bad value. Options it does not know are for other checks: it must ignore them.

    Parameters
    ----------
    func : callable
        The explainer.
    check : callable(mapping)
        Validates the options (the options that are not given keep `func`'s defaults).

    Examples
    --------
    >>> from pdcr_lab.explainers import register_option_check
    >>> def mine(model, image, *, roi, target=None, seed=0, device=None, steps=10):
    ...     ...
    >>> register_option_check(mine, lambda options: check_int("steps", options.get("steps", 10), minimum=1))
    """
    if not callable(func) or not callable(check):
        raise TypeError(f"func and check must be callables, got {describe(func)} and {describe(check)}")
    _OPTION_CHECKS[func] = check


def _option(key: str | None, value: Any, check: Callable[[], Any]) -> None:
    try:
        check()
    except OptionError:
        raise
    except (TypeError, ValueError) as exc:
        raise OptionError(str(exc), key, value) from None


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the defaults' types are used instead
        return {}


def _default_type(default: Any) -> Any:
    """What a parameter without an annotation takes, judged from its default (None: anything)."""
    for kind in (bool, int, float, str):
        if type(default) is kind:
            return kind
    return Any


def _union_members(hint: Any) -> tuple[Any, ...]:
    if get_origin(hint) in (Union, types.UnionType):
        return get_args(hint)
    return (hint,)


def _is_number(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` is of the type `hint` (hints this cannot judge accept everything)."""
    import numpy as np

    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or isinstance(hint, (str, typing.TypeVar, typing.ForwardRef)):
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, member) for member in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if hint is float:
        return _is_number(value) and math.isfinite(float(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return not args or (len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args)))
    if origin in (list, collections.abc.Sequence) or hint in (list, tuple, collections.abc.Sequence):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return callable(value)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _expected(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_expected(member) for member in get_args(hint)))
    if origin is Literal:
        return f"one of {list(get_args(hint))}"
    named = {bool: "True or False", int: "an integer", float: "a finite number", str: "a string",
             type(None): "None", None: "None"}
    if hint in named:
        return named[hint]
    if origin is tuple or origin in (list, collections.abc.Sequence) or hint in (list, tuple):
        return "a list"
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return "a mapping"
    if origin is collections.abc.Callable:
        return "a callable"
    name = getattr(hint, "__name__", str(hint))
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def check_annotation(name: str, value: Any, hint: Any) -> Any:
    """`value` if it is of the annotated type `hint`, else an error in the words of :mod:`pdcr_lab.checks`.

    Parameters
    ----------
    name : str
        The option, for the message.
    value : object
        What was given.
    hint : type annotation
        The parameter's (resolved) annotation: ``int``, ``float``, ``bool``, ``str``, a
        ``Literal``, a union, ``tuple[...]``, a class; anything it cannot judge is accepted.

    Examples
    --------
    >>> from typing import Literal
    >>> check_annotation("coarse", 3, int)
    3
    >>> check_annotation("tau", float("nan"), float)
    Traceback (most recent call last):
    ...
    ValueError: tau=nan must be finite
    >>> check_annotation("mode", "fast", Literal["paper", "adaptive"])
    Traceback (most recent call last):
    ...
    ValueError: mode='fast' is not supported; expected one of ['paper', 'adaptive']
    """
    if _fits(value, hint):
        return value
    members = _union_members(hint)
    if float in members and _is_number(value):
        check_float(name, value)  # NaN or Inf: its message
    if set(members) <= {int, type(None)} and isinstance(value, (int, float)) and not isinstance(value, bool):
        check_int(name, value)  # a float for an integer: its message
    literals = [a for m in members if get_origin(m) is Literal for a in get_args(m)]
    if literals and all(get_origin(m) is Literal or m is type(None) for m in members) and value is not None:
        check_choice(name, value, literals)
    raise TypeError(f"{name} must be {_expected(hint)}, got {describe(value)}")


def check_device(device: Any) -> torch.device:
    """The device an explainer would run on, checked the way every explainer checks it, without a model.

    Calls :func:`pdcr_lab.call.resolve_device` (unknown names, ``meta``, CUDA devices this machine
    does not have are refused).

    Parameters
    ----------
    device : str or torch.device
        What a caller asks for.

    Examples
    --------
    >>> from pdcr_lab.explainers import check_device
    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("banana")
    Traceback (most recent call last):
    ...
    ValueError: device='banana' is not a device torch knows (...); expected e.g. 'cpu' or 'cuda:0'
    """
    from .adapters import ModelAdapter
    from .call import resolve_device

    if device is None:
        raise TypeError("device must be a string such as 'cpu' or 'cuda:0' or a torch.device, got None")
    return resolve_device(device, ModelAdapter(nn.Identity()))


def _keyword_checks(func: Callable[..., Any], caller: str) -> Callable[[Mapping[str, Any]], None]:
    """The checks of an explainer whose ``**reading`` takes the shared options (the baselines)."""
    named = set(inspect.signature(func).parameters)

    def check(options: Mapping[str, Any]) -> None:
        from .call import check_reading, check_shared_options

        check_reading(caller, {k: v for k, v in options.items() if k not in named})  # unknown names
        check_shared_options(options, caller=caller)

    return check


def _register_builtins() -> None:
    from .baselines import gradcam, misure, occlusion, random_scores, rise
    from .call import check_shared_options
    from .components import explain_components
    from .engine import check_options as check_explain_options
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
    register_option_check(explain, check_explain_options)
    for func, caller in ((gradcam, "gradcam"), (misure, "misure"), (occlusion, "occlusion"), (rise, "rise"),
                         (random_scores, "random_scores")):
        register_option_check(func, _keyword_checks(func, caller))
    register_option_check(explain_components,
                          lambda options: check_shared_options(options, caller="explain_components"))


_register_builtins()
