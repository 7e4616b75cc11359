"""The sweep's view of the explainer registry (:mod:`pdcr_lab.explainers`).

A config's ``methods`` section names registered explainers or import paths ``"module:function"``;
both resolve through the one registry of the package. ``register_method`` is the sweep-flavoured
spelling of :func:`pdcr_lab.explainers.register_explainer` (PdCR's sign by default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..explainers import (
    SUPPLIED,
    ExplainerSpec,
    accepted_parameters,
    get_explainer,
    import_object,
    list_explainers,
    parameter_default,
    register_explainer,
)

__all__ = ["Method", "register_method", "get_method", "list_methods", "import_object", "accepted_parameters",
           "parameter_default", "SUPPLIED"]

#: A registered explainer as the sweep sees it.
Method = ExplainerSpec
get_method = get_explainer
list_methods = list_explainers


def register_method(name: str, func: Callable[..., Any], *, multi_roi: bool = False, support_sign: int = -1,
                    deterministic: bool = False, perturbs: str = "unknown", **defaults: Any) -> ExplainerSpec:
    """Register an explainer for sweep configs (and everywhere else): :func:`pdcr_lab.explainers.register_explainer`.

    Parameters
    ----------
    name : str
        Registry name.
    func : callable
        The explainer.
    multi_roi : bool
        A list of RoIs shares one call's forward passes.
    support_sign : {-1, 1, 0}
        Sign of ``ate`` that means "supports the RoI" (default: PdCR's -1).
    deterministic : bool
        The map does not depend on the seed.
    perturbs : str
        What the method changes.
    **defaults
        Options fixed by the entry.

    Examples
    --------
    >>> import pdcr_lab
    >>> from pdcr_lab.sweep import register_method, get_method
    >>> _ = register_method("pdcr_blur", pdcr_lab.explain, multi_roi=True, intervention="blur")
    >>> dict(get_method("pdcr_blur").defaults)
    {'intervention': 'blur'}
    """
    return register_explainer(name, func, support_sign=support_sign, multi_roi=multi_roi, deterministic=deterministic,
                              perturbs=perturbs, **defaults)
