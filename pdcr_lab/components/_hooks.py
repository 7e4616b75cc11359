"""Forward hooks on named modules, and the walk over a module's (possibly nested) output.

A module may return a tensor or a tuple / list / dict of them (HRNet's fusion returns a list of
branches). :func:`tensor_leaves` lists the tensors of such an output in a fixed order and
:func:`rebuild` puts replacements back into the same structure, so a hook can treat every tensor
the module hands on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["tensor_leaves", "rebuild", "describe_output", "hooked"]


def tensor_leaves(output: Any) -> list[torch.Tensor]:
    """The tensors of a module output (a tensor, or tuples / lists / dicts of them), depth first.

    Parameters
    ----------
    output : object
        What a module returned; anything that is not a tensor or a container of them has none.

    Examples
    --------
    >>> out = {"a": torch.zeros(1, 2), "b": (torch.ones(1, 3), "text")}
    >>> [tuple(t.shape) for t in tensor_leaves(out)]
    [(1, 2), (1, 3)]
    """
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for value in output.values() for t in tensor_leaves(value)]
    if isinstance(output, (tuple, list)):
        return [t for value in output for t in tensor_leaves(value)]
    return []


def rebuild(output: Any, leaves: Iterator[torch.Tensor]) -> Any:
    """`output` with its tensors replaced, in :func:`tensor_leaves` order, by `leaves`.

    Parameters
    ----------
    output : object
        A module output (tensor, or tuple / list / dict / namedtuple of them).
    leaves : iterator of Tensor
        The replacements, consumed one per tensor of `output`.

    Examples
    --------
    >>> out = [torch.zeros(1), {"x": torch.zeros(1)}]
    >>> rebuild(out, iter([torch.ones(1), 2 * torch.ones(1)]))
    [tensor([1.]), {'x': tensor([2.])}]
    """
    if isinstance(output, torch.Tensor):
        return next(leaves)
    if isinstance(output, Mapping):
        return type(output)((k, rebuild(v, leaves)) for k, v in output.items())
    if isinstance(output, (tuple, list)):
        items = [rebuild(v, leaves) for v in output]
        if isinstance(output, tuple) and hasattr(output, "_fields"):  # a namedtuple
            return type(output)(*items)
        return type(output)(items)
    return output


def describe_output(output: Any) -> str:
    """Per-sample shape of a module output: ``(16, 48, 48)``, or ``list[(12, 48, 48), (24, 24, 24)]``.

    Parameters
    ----------
    output : Tensor or container of tensors
        A module output whose first dim is the batch.

    Examples
    --------
    >>> describe_output([torch.zeros(1, 12, 48, 48), torch.zeros(1, 24, 24, 24)])
    'list[(12, 48, 48), (24, 24, 24)]'
    """
    leaves = tensor_leaves(output)
    shapes = [str(tuple(t.shape[1:])) for t in leaves]
    if isinstance(output, torch.Tensor):
        return shapes[0]
    return f"{type(output).__name__}[{', '.join(shapes)}]"


@contextlib.contextmanager
def hooked(modules: Sequence[nn.Module], hook: Callable[[int, Any], Any]) -> Iterator[None]:
    """Forward hooks calling ``hook(index, output)`` on ``modules[index]``; removed on exit, even when
    the model raises. A non-None return value replaces the module's output.

    Parameters
    ----------
    modules : sequence of torch.nn.Module
        The hooked modules.
    hook : callable(index, output) -> object or None
        Called after each forward of ``modules[index]``.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Identity(), torch.nn.ReLU())
    >>> with hooked([net[0]], lambda index, out: -out):      # negate the first module's output
    ...     net(torch.ones(2))
    tensor([0., 0.])
    >>> net(torch.ones(2))                                   # the hook is gone
    tensor([1., 1.])
    """
    handles = []
    try:
        for index, module in enumerate(modules):
            handles.append(module.register_forward_hook(lambda _m, _a, out, i=index: hook(i, out)))
        yield
    finally:
        for handle in handles:
            handle.remove()
