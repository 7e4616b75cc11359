"""A model named by a string (the ``--model SPEC`` of the command line) -> an ``nn.Module`` to explain.

SPEC forms, tried in this order:

- a checkpoint file written by ``pdcr-lab zoo train`` (``.pt``, ``.pth``): the architecture, its
  weights and the normalisation of the data it was trained on (``info["data"]``);
- a ``torch.export`` program file (``.pt2``, written by ``torch.export.save``); a program exported
  with a fixed batch of 1 is run one image at a time, any other fixed batch is refused;
- ``module:function`` or ``path/to/file.py:function``: a function called without arguments that
  returns an ``nn.Module`` (your own architecture and weights);
- a zoo architecture name (``unet``) together with ``dataset=`` (a shipped checkpoint).

Every failure is a :class:`ModelSpecError` whose one-line message names the SPEC and what was
expected, so a command line can print it without a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["LoadedModel", "ModelSpecError", "load_model", "expected_input"]

CHECKPOINT_SUFFIXES = (".pt", ".pth")
EXPORT_SUFFIXES = (".pt2",)


class ModelSpecError(ValueError):
    """A model SPEC that cannot be loaded; the message names the SPEC and the reason."""


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded from a SPEC.

    Parameters
    ----------
    model : nn.Module
        In eval mode.
    kind : {"checkpoint", "export", "function", "zoo"}
        Which SPEC form it came from.
    spec : str
        The SPEC as given.
    info : dict
        What is known about it: for checkpoints the zoo metadata (``in_channels``, ``image_size``,
        ``data`` with the training data's normalisation), for exported programs the input shape
        they were exported with (``input_shape``).
    """

    model: nn.Module
    kind: str
    spec: str
    info: dict[str, Any] = field(default_factory=dict)


class ExportedModel(nn.Module):
    """A ``torch.export`` program as an ordinary module (train/eval stop here: the graph is fixed).

    Exported graphs refuse ``.eval()``; their behaviour (e.g. BatchNorm statistics) was fixed when
    they were exported, so this wrapper records the mode without passing it on.

    Parameters
    ----------
    program : nn.Module
        ``ExportedProgram.module()``.
    one_at_a_time : bool
        The program was exported for a batch of 1: run batches image by image.
    """

    def __init__(self, program: nn.Module, *, one_at_a_time: bool) -> None:
        super().__init__()
        self.program = program
        self.one_at_a_time = one_at_a_time

    def train(self, mode: bool = True) -> ExportedModel:
        """Record the mode; the exported graph keeps the behaviour it was exported with."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> Any:
        """The program's output; batches run image by image when it was exported for one image.

        Parameters
        ----------
        x : Tensor (B, C, H, W)
            The input batch.
        """
        if not self.one_at_a_time:
            return self.program(x)
        outs = [self.program(x[i : i + 1]) for i in range(x.shape[0])]
        if isinstance(outs[0], torch.Tensor):
            return torch.cat(outs)
        if isinstance(outs[0], dict):
            return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return type(outs[0])(torch.cat(parts) for parts in zip(*outs))


def _checkpoint(spec: str, path: Path) -> LoadedModel:
    from .zoo import load_checkpoint

    try:
        model, meta = load_checkpoint(path)
    except (ValueError, OSError) as exc:
        hint = ("" if isinstance(exc, OSError) else "; for weights of your own architecture, give a function that "
                "builds the model and loads them (--model file.py:function), or a torch.export program (.pt2)")
        raise ModelSpecError(f"--model {spec!r}: {exc}{hint}") from None
    return LoadedModel(model, "checkpoint", spec, meta)


def _export(spec: str, path: Path) -> LoadedModel:
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - torch raises zip, pickle and runtime errors alike
        raise ModelSpecError(f"--model {spec!r} is not a torch.export program (torch.export.save writes one): "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    if len(inputs) != 1:
        raise ModelSpecError(f"--model {spec!r} takes {len(inputs)} inputs; a segmentation model takes one image batch")
    shape = list(inputs[0].meta["val"].shape)
    batch = shape[0]
    if isinstance(batch, int) and batch != 1:
        raise ModelSpecError(f"--model {spec!r} was exported for a fixed batch of {batch} images; export it with a "
                             "dynamic batch (dynamic_shapes={'x': {0: torch.export.Dim('batch')}}) or a batch of 1")
    info = {"input_shape": [d if isinstance(d, int) else None for d in shape], "dynamic_batch": not isinstance(batch, int)}
    model = ExportedModel(program.module(), one_at_a_time=isinstance(batch, int)).eval()
    return LoadedModel(model, "export", spec, info)


def _function(spec: str) -> LoadedModel:
    where, _, name = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ModelSpecError(f"--model {spec!r}: file {where!r} does not exist")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules.setdefault(path.stem, module)
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:  # `module:function` from the working folder
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
    except ModelSpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - importing user code can raise anything
        raise ModelSpecError(f"--model {spec!r}: cannot import {where!r}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelSpecError(f"--model {spec!r}: {where!r} has no function {name!r}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelSpecError(f"--model {spec!r}: {name}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"--model {spec!r}: {name}() returned {type(model).__name__}, expected a torch.nn.Module")
    return LoadedModel(model.eval(), "function", spec, {"factory": spec})


def _zoo(spec: str, dataset: str | None) -> LoadedModel:
    from .zoo import load

    if dataset is None:
        raise ModelSpecError(f"--model {spec!r} is a zoo architecture: say which dataset it was trained on "
                             "(--dataset), or give a checkpoint file, a .pt2 program or module:function")
    try:
        model, meta = load(spec, dataset)
    except (ValueError, OSError) as exc:
        raise ModelSpecError(f"--model {spec!r}: {exc}") from None
    return LoadedModel(model, "zoo", spec, meta)


def load_model(spec: str | os.PathLike[str], *, dataset: str | None = None) -> LoadedModel:
    """Load the model a SPEC names (module notes list the forms).

    Parameters
    ----------
    spec : str or path
        A checkpoint file, a ``.pt2`` program, ``module:function`` or a zoo architecture name.
    dataset : str, optional
        For a zoo architecture name: the dataset of its shipped checkpoint.

    Returns
    -------
    LoadedModel
        The model in eval mode and what is known about it.

    Examples
    --------
    >>> load_model("unet", dataset="lesions").kind
    'zoo'
    >>> load_model("no_such_file.pt")
    Traceback (most recent call last):
    ...
    pdcr_lab.models.ModelSpecError: --model 'no_such_file.pt': file does not exist
    """
    from .zoo import list as zoo_models

    text = os.fspath(spec)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES + EXPORT_SUFFIXES:
        if not path.is_file():
            raise ModelSpecError(f"--model {text!r}: file does not exist")
        return _checkpoint(text, path) if suffix in CHECKPOINT_SUFFIXES else _export(text, path)
    if ":" in text and not path.exists():
        return _function(text)
    if text in zoo_models():
        return _zoo(text, dataset)
    raise ModelSpecError(f"--model {text!r} is neither a checkpoint (.pt) of `pdcr-lab zoo train`, a torch.export "
                         f"program (.pt2), module:function nor a zoo architecture ({', '.join(zoo_models())})")


def expected_input(loaded: LoadedModel) -> str:
    """What the model takes, in words, for error messages (``"1-channel images, sides divisible by 32"``).

    Parameters
    ----------
    loaded : LoadedModel
        As :func:`load_model` returns it.
    """
    model, info = loaded.model, loaded.info
    if "input_shape" in info:
        c, h, w = info["input_shape"][1:4]
        size = f"{h}x{w}" if h and w else "any size"
        return f"{c if c else 'any number of'}-channel images of {size} (the exported input shape)"
    channels = getattr(model, "channels", info.get("in_channels"))
    multiple = getattr(model, "multiple", None)
    parts = [f"{channels}-channel images" if channels else "images"]
    if multiple:
        parts.append(f"height and width divisible by {multiple}")
    if info.get("image_size"):
        parts.append("trained at {}x{}".format(*info["image_size"]))
    return ", ".join(parts)
