"""Which components of a model can be explained: :func:`find_components` and :func:`list_components`.

Two sources, in this order:

1. **Declared stages.** A model may list its own stages with a ``stages()`` method returning
   ``{module path: role}`` (every :mod:`pdcr_lab.zoo` model does). They are used as declared,
   except that a container which is never called itself (an ``nn.ModuleList``) is replaced by its
   elements with the same role.
2. **Structure.** Otherwise the network is found by a dry forward pass with a hook on every module:
   wrappers (a module with a single child) are descended, and the children of the first module with
   several children that return tensors are the stages, in the order they finish.
   Roles come from the names (``enc``/``down`` -> encoder, ``dec``/``up`` -> decoder, ``skip``,
   ``bottleneck``, ``head``, ...), else from the resolution: stages before the coarsest output are
   encoders, the first at the coarsest is the bottleneck, later ones are decoders and a last stage
   that outputs the model's output shape is the head (stages of a network that never changes
   resolution get the role "module"). Attention / mixer / state-space blocks found
   anywhere in the tree (by class name) are listed as well.

A component is *main* when it is a stage of the network proper: not the head (replacing the head's
output replaces the prediction), not an attention / mixer / state-space / fusion block nested in
another listed stage (it is part of that stage), and not a container of other listed stages (MONAI's
``SkipConnection`` holds everything deeper). ``explain_components(layers=None)`` explains the main
components.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters import ModelAdapter
from ..call import evaluation
from ._hooks import describe_output, hooked, tensor_leaves

__all__ = ["Component", "ROLES", "find_components", "list_components"]

#: Roles a component can have ("module": a path the user named that no rule classifies).
ROLES = ("stem", "encoder", "skip", "bottleneck", "decoder", "fusion", "attention", "mixer", "ssm", "head", "module")
_SUB_BLOCKS = {"attention", "mixer", "ssm", "fusion"}
_NAME_ROLES = (  # first match wins; matched against the last path element and the class name
    ("skip", r"skip"),
    ("bottleneck", r"bottleneck|bridge|center|centre|middle"),
    ("stem", r"stem"),
    ("head", r"head|final|classifier|^out"),
    ("attention", r"attn|attention"),
    ("ssm", r"mamba|ssm|state.?space"),
    ("mixer", r"mixer|mlp"),
    ("fusion", r"fuse|fusion"),
    ("encoder", r"enc|down|contract"),
    ("decoder", r"dec|up|expand"),
)
_BLOCK_CLASS = re.compile(r"attention|attn|mixer|mamba|ssm|transformerblock|transformerlayer|mlpblock", re.I)


@dataclass(frozen=True)
class Component:
    """A module of a model that component effects can be measured on."""

    path: str  #: module path, as accepted by ``model.get_submodule``
    role: str  #: one of :data:`ROLES`
    output: str  #: per-sample output shape, e.g. ``(16, 48, 48)``
    order: int  #: position at which its forward pass finishes (first call)
    main: bool  #: a main stage (see the module docstring)


def _example(model: nn.Module, example: Any) -> torch.Tensor:
    if isinstance(example, torch.Tensor):
        x = example.detach().float()
        return x.unsqueeze(0) if x.ndim == 3 else x
    if example is not None:
        return torch.zeros(1, *example)
    channels = ModelAdapter(model).expected_channels() or 3
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if first is not None and len(first.kernel_size) == 3:  # a 3-D model: a small volume
        return torch.zeros(1, channels, 32, 32, 32)
    return torch.zeros(1, channels, 64, 64)


def _dry_run(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, tuple[int, Any]], Any]:
    """Finishing order and output of the first call of every module that runs on `x`."""
    named = [(p, m) for p, m in model.named_modules() if p]
    records: dict[str, tuple[int, Any]] = {}

    def record(i: int, out: Any) -> None:
        path = named[i][0]
        if path not in records:
            records[path] = (len(records), out)

    with evaluation(model, None), hooked([m for _, m in named], record):
        first = next(iter([*model.parameters(), *model.buffers()]), None)
        try:
            output = model(x.to(first.device) if first is not None else x)
        except Exception as exc:
            raise ValueError(
                f"the dry forward pass that finds the model's components failed on an input of shape "
                f"{tuple(x.shape)}: {exc}; pass example=(C, H, W) of an input the model accepts"
            ) from exc
    return records, output


def _ran(path: str, model: nn.Module, records: dict[str, tuple[int, Any]]) -> list[str]:
    """`path` if it ran and returned tensors; the paths of its elements for a container never called."""
    if path in records:
        return [path] if tensor_leaves(records[path][1]) else []
    prefix = f"{path}." if path else ""
    return [p for name, _ in model.get_submodule(path).named_children() for p in _ran(prefix + name, model, records)]


def _name_role(path: str, module: nn.Module) -> str | None:
    last = path.rsplit(".", 1)[-1].lower()
    for role, pattern in _NAME_ROLES:
        if re.search(pattern, last) or re.search(pattern, type(module).__name__.lower()):
            return role
    return None


def _declared(model: nn.Module) -> dict[str, str] | None:
    stages = getattr(model, "stages", None)
    if stages is None or isinstance(stages, nn.Module) or not callable(stages):
        return None
    declared = stages()
    if isinstance(declared, dict):
        return {str(p): str(r) for p, r in declared.items()}
    return {str(p): "module" for p in declared}


def _structural(model: nn.Module, records: dict[str, tuple[int, Any]], output: Any) -> dict[str, str]:
    path = ""
    while True:
        children = [f"{path}.{n}" if path else n for n, _ in model.get_submodule(path).named_children()]
        if len(children) != 1 or next(model.get_submodule(children[0]).children(), None) is None:
            break
        path = children[0]  # a wrapper: descend
    stages = sorted((p for child in children for p in _ran(child, model, records)), key=lambda p: records[p][0])
    roles = {p: _name_role(p, model.get_submodule(p)) for p in stages}
    spatial = {p: _resolution(records[p][1]) for p in stages}
    sized = [p for p in stages if spatial[p] is not None and roles[p] is None]
    final = [t.shape for t in tensor_leaves(output)]
    if len(sized) > 1 and [t.shape for t in tensor_leaves(records[sized[-1]][1])] == final:
        roles[sized.pop()] = "head"
    if len({spatial[p] for p in sized}) > 1:  # one resolution throughout says nothing about roles
        coarsest = min(spatial[p] for p in sized)
        bottom = next(p for p in sized if spatial[p] == coarsest)
        for p in sized:
            after = records[p][0] > records[bottom][0]
            roles[p] = "bottleneck" if p == bottom else ("decoder" if after else "encoder")
    found = {p: roles[p] or "module" for p in stages}
    for path, module in model.named_modules():  # attention / mixer blocks anywhere, outermost only
        if path in records and path not in found and _BLOCK_CLASS.search(type(module).__name__):
            if not any(path.startswith(f"{q}.") for q, r in found.items() if r in _SUB_BLOCKS):
                role = _name_role(path, module)
                found[path] = role if role in _SUB_BLOCKS else "attention"
    return found


def _resolution(output: Any) -> int | None:
    sizes = [t.shape[-1] * t.shape[-2] for t in tensor_leaves(output) if t.ndim == 4]
    return min(sizes) if sizes else None


def _is_main(path: str, role: str, roles: dict[str, str]) -> bool:
    if role == "head":
        return False
    if role in _SUB_BLOCKS and any(path.startswith(f"{q}.") for q in roles):
        return False
    return not any(q.startswith(f"{path}.") and r not in _SUB_BLOCKS | {"head"} for q, r in roles.items())


def find_components(model: nn.Module, example: Any = None) -> list[Component]:
    """The meaningful components of `model` with their roles, in the order their forward passes finish.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; its components are found by a dry forward pass (in eval mode, restored after).
    example : Tensor (C, H, W) or (1, C, H, W), or a shape (C, H, W), optional
        Input of the dry forward pass that records which modules run and what they output; a
        volume is given batched, (1, C, D, H, W), or as a shape (C, D, H, W).
        Default: zeros of shape (C, 64, 64), C from the first convolution (else 3); (C, 32, 32, 32)
        when the first convolution is 3-D.

    Returns
    -------
    list of :class:`Component`
        Declared stages when the model has ``stages()``, else the structure's stages plus attention
        / mixer blocks (see :mod:`pdcr_lab.components`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    records, output = _dry_run(model, _example(model, example))
    declared = _declared(model)
    if declared is None:
        roles = _structural(model, records, output)
    else:
        roles = {}
        modules = dict(model.named_modules())
        for path, role in declared.items():
            if path in modules:
                roles.update(dict.fromkeys(_ran(path, model, records), role))
    found = [
        Component(p, r, describe_output(records[p][1]), records[p][0], _is_main(p, r, roles)) for p, r in roles.items()
    ]
    return sorted(found, key=lambda c: c.order)


def list_components(model: nn.Module, example: Any = None, *, main: bool = False) -> list[str]:
    """Module paths of `model`'s meaningful components (see :func:`find_components`).

    With ``main=True`` only the main stages: those ``explain_components(layers=None)`` explains.

    Parameters
    ----------
    model : torch.nn.Module
        Any model.
    example : Tensor or shape (C, H, W), optional
        Input of the dry forward pass, as in :func:`find_components`.
    main : bool
        List only the main stages.

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.components import list_components
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(),
    ...                           torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(8, 1, 1))
    >>> list_components(net, (3, 32, 32))
    ['0', '1', '2', '3']
    """
    return [c.path for c in find_components(model, example) if c.main or not main]
