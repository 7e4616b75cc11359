"""Sweep configs: YAML/TOML text -> a :class:`SweepConfig` -> a validated :class:`Plan`.

A config is checked in two stages, both in the driver, before a cluster starts or a byte is written:

1. *Structure* (:func:`parse_config`, :func:`load_config`): the pydantic models below declare every
   key with its type, range and default, and refuse unknown keys at any depth. A bad config raises
   one :class:`ConfigError` with a line per problem that names the config file, the path of the key
   (``datasets[0].rois.auto``), the value found and what was expected.
2. *Meaning* (:func:`resolve`): what the config names must exist and fit the data: zoo models,
   datasets and factories, methods and their parameters, image selections, RoIs inside the images,
   block grids that agree. These messages name the config file and the entry
   (``config 'sweep.yaml': models[1] ('resnet'): unknown zoo model ...``).

Format (YAML shown; TOML has the same structure). :func:`config_schema` (``pdcr-lab sweep --schema``)
gives the JSON schema, which editors use to complete and check configs (YAML: a first line
``# yaml-language-server: $schema=sweep.schema.json``)::

    seed: 0                        # base seed; each image's seed is derived from it (derive_seed)
    target: ground_truth           # or "prediction" (ground-truth-free mode)
    models:                        # labels along the store's `model` dim
      - unet                       # = {name: unet, zoo: unet}: pdcr_lab.zoo.load("unet", <dataset>)
      - {name: tiny, factory: "pdcr_lab.sweep.toys:tiny_cnn", options: {seed: 1}}
    datasets:                      # labels along `dataset`
      - {name: lesions, options: {size: 96}, split: test, images: 8}
      - {name: mine, factory: "my_pkg.data:load", images: [img_003, img_007]}
    rois: {auto: 16}               # or [[row, col, h, w], ...] or {file: coords.txt, size: 32}
    methods:                       # labels along `method`
      pdcr: {coarse: 3, fine: 50, tau: 0.02}
      zero: {}                     # the registered zero-occlusion ablation
      blur: {method: pdcr, intervention: blur}

Optional top-level keys: ``device`` (``auto``, ``cpu``, ``cuda:1``, ...), ``block`` (default: the
datasets' patch banks), ``model_cache`` (models a worker keeps, 4), ``resources`` (``auto`` or
dask worker resources per task such as ``{GPU: 1}``), ``probe`` (run every model once per dataset
while planning, true), ``retries`` (per task, 0). A dataset may set its own ``rois``. A relative RoI
``file`` is relative to the config file's folder.

Examples
--------
>>> import tomllib
>>> from pdcr_lab.sweep import ConfigError, parse_config
>>> text = '''
... seed = 3
... models = ["unet", {name = "tiny", factory = "pdcr_lab.sweep.toys:tiny_cnn", options = {seed = 1}}]
... datasets = [{name = "lesions", images = 4}]
... rois = {auto = 16}
... [methods.pdcr]
... coarse = 3
... fine = 50
... [methods.zero]
... '''
>>> cfg = parse_config(tomllib.loads(text))
>>> [m.source() for m in cfg.models]
['zoo:unet', 'pdcr_lab.sweep.toys:tiny_cnn']
>>> cfg.datasets[0].source(), cfg.datasets[0].images, cfg.rois.kind, cfg.rois.side
('embedded:lesions', 4, 'auto', 16)
>>> [(m.name, m.method, dict(m.params)) for m in cfg.methods]
[('pdcr', 'pdcr', {'coarse': 3, 'fine': 50}), ('zero', 'zero', {})]
>>> try:
...     parse_config({"models": ["unet"], "datasets": [{"name": "lesions", "rois": {"auto": 0}}],
...                   "methods": {"pdcr": {"fine": 50}}, "sed": 1})
... except ConfigError as exc:
...     print(exc)
config: datasets[0].rois.auto: got 0; expected a value >= 1 (side of the square RoI ...)
config: sed: unknown key (value 1); allowed keys: block, datasets, ...
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema

from ..checks import describe
from ..explainers import OptionError, check_device
from ..schema import SCHEMA_VERSION
from ._methods import SUPPLIED, Method, accepted_parameters, get_method, import_object, parameter_default

__all__ = [
    "ConfigError",
    "ModelEntry",
    "DatasetEntry",
    "MethodEntry",
    "RoiRule",
    "SweepConfig",
    "Plan",
    "load_config",
    "parse_config",
    "config_schema",
    "resolve",
    "check_config",
    "derive_seed",
]

Target = Literal["ground_truth", "prediction"]
TARGETS = get_args(Target)  #: values of `target`


class ConfigError(ValueError):
    """A sweep config is invalid; each line names the config, the offending key or entry and the value."""


def derive_seed(base: int, dataset: str, image_id: str) -> int:
    """Seed of one image's explanations: a hash of (base seed, dataset label, image id).

    It depends on labels, never on positions, so adding a model, a method or an image to a config
    leaves every other seed unchanged; all models and methods of one image share it (common random
    draws make maps of different models directly comparable).

    Parameters
    ----------
    base : int
        The config's base seed.
    dataset : str
        The dataset's label in the config.
    image_id : str
        The image's id in its dataset.

    Examples
    --------
    >>> derive_seed(0, "lesions", "lesions_0400") == derive_seed(0, "lesions", "lesions_0400")
    True
    >>> derive_seed(0, "lesions", "lesions_0400") != derive_seed(1, "lesions", "lesions_0400")
    True
    """
    digest = hashlib.sha256(json.dumps([int(base), str(dataset), str(image_id)]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


# -- value types -----------------------------------------------------------------------------------


def _plain_int(value: Any) -> Any:
    """numpy integers (configs built in Python) count as integers; bools and floats do not."""
    return int(value) if isinstance(value, np.integer) else value


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value  # `options:` with nothing after it in YAML


def _path_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


Integer = Annotated[StrictInt, BeforeValidator(_plain_int)]
Count = Annotated[StrictInt, Field(ge=0), BeforeValidator(_plain_int)]
Positive = Annotated[StrictInt, Field(ge=1), BeforeValidator(_plain_int)]
Amount = Union[Annotated[StrictInt, Field(ge=0)], Annotated[StrictFloat, Field(ge=0)]]
LABEL_PATTERN = r"\S"
IMPORT_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
Label = Annotated[StrictStr, Field(pattern=LABEL_PATTERN)]
ImportPath = Annotated[StrictStr, Field(pattern=IMPORT_PATTERN)]
#: A factory: an import path, or (configs written in Python) the callable itself.
Factory = Union[ImportPath, SkipJsonSchema[Callable[..., Any]]]
Options = Annotated[dict[StrictStr, Any], BeforeValidator(_none_is_empty)]
Box = tuple[Integer, Integer, Positive, Positive]
_STRICT = ConfigDict(extra="forbid", frozen=True)


def _callable_name(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"


def _resolve_callable(obj: str | Callable[..., Any]) -> Callable[..., Any]:
    func = import_object(obj) if isinstance(obj, str) else obj
    if not callable(func):
        raise TypeError(f"{_callable_name(obj)} is not callable")
    return func


def _accepts(func: Callable[..., Any], name: str) -> bool:
    accepted = accepted_parameters(func)
    return accepted is None or name in accepted


# -- the config's parts ----------------------------------------------------------------------------


class RoiRule(BaseModel):
    """How the RoIs of an image are chosen: fixed ``boxes``, ``auto`` (boundary_roi) or a ``file``.

    Written as ``{auto: 16}``, ``[[row, col, height, width], ...]`` (= ``{boxes: [...]}``) or
    ``{file: coords.txt, size: 32}``.
    """

    model_config = _STRICT

    auto: Optional[Positive] = Field(None, description="side of the square RoI on each image's target boundary")
    boxes: Optional[Annotated[tuple[Box, ...], Field(min_length=1)]] = Field(
        None, description="the same RoIs on every image: [row, col, height, width] in pixels")
    file: Optional[Annotated[StrictStr, BeforeValidator(_path_text)]] = Field(
        None, description="lines 'image_id row col' (the images to explain and their RoIs); relative to the config's folder")
    size: Optional[Positive] = Field(None, description="side of the square RoIs of `file`; default 32")

    @field_validator("file")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or base is None or Path(value).is_absolute():
            return value
        return str(Path(base) / value)

    @model_validator(mode="after")
    def _one_kind(self) -> RoiRule:
        given = [k for k in ("auto", "boxes", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'auto', 'boxes', 'file', got {given or 'none of them'}")
        if self.size is not None and self.auto is not None:
            raise ValueError(f"write the RoI side as auto: {self.size} (no separate 'size')")
        if self.size is not None and self.boxes is not None:
            raise ValueError(f"size={self.size} goes with 'auto' or 'file', not with 'boxes'")
        return self

    @property
    def kind(self) -> str:
        """``"auto"``, ``"boxes"`` or ``"file"``."""
        return "auto" if self.auto is not None else "boxes" if self.boxes is not None else "file"

    @property
    def side(self) -> int:
        """Side of the automatic or listed square RoIs."""
        return self.auto or self.size or 32

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "boxes":
            return {"boxes": [list(b) for b in self.boxes or ()]}
        if self.kind == "auto":
            return {"auto": self.side}
        return {"file": self.file, "size": self.side}


def _roi_shorthand(value: Any) -> Any:
    return {"boxes": value} if isinstance(value, (list, tuple)) else value


RoiField = Annotated[RoiRule, BeforeValidator(_roi_shorthand, json_schema_input_type=Union[list[Box], RoiRule])]


class _Entry(BaseModel):
    """What model and dataset entries share: a label, a source (zoo, embedded, factory) and options."""

    model_config = _STRICT

    name: Label = Field(description="label along the store's dim; default: the zoo model or factory name")
    options: Options = Field(default_factory=dict, description="keyword arguments of the loader or factory")

    def source(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def key(self) -> str:
        """Identity of what this entry loads (the per-worker cache key)."""
        return json.dumps([self.source(), dict(self.options)], sort_keys=True, default=str)


class ModelEntry(_Entry):
    """One model of a sweep: a zoo model, or ``factory(**options)`` (+ ``dataset=`` if it takes one).

    A factory returns an ``nn.Module`` or ``(module, metadata dict)``. Entries are small and
    picklable: workers call :meth:`load` themselves and keep the model (see ``_tasks``).
    """

    zoo: Optional[Label] = Field(None, description="a zoo model, as listed by pdcr-lab zoo list; default: the name")
    factory: Optional[Factory] = Field(None, description="'package.module:function' returning nn.Module or (module, meta)")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        data = dict(value)
        if "zoo" not in data and "factory" not in data:
            if "name" not in data:
                raise ValueError(f"give a zoo model name (zoo: unet) or a factory (factory: module:function), got {describe(value)}")
            data["zoo"] = data["name"]
        if "name" not in data:
            source = data.get("factory", data.get("zoo"))
            data["name"] = source if isinstance(source, str) and ":" not in source else \
                _callable_name(source).rpartition(":")[2].rpartition(".")[2]
        return data

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if self.zoo is not None and self.factory is not None:
            raise ValueError(f"give either zoo ({self.zoo!r}) or factory ({_callable_name(self.factory)!r}), not both")
        return self

    def source(self) -> str:
        return f"zoo:{self.zoo}" if self.zoo else _callable_name(self.factory)

    def load(self, dataset: str) -> tuple[Any, dict[str, Any]]:
        """Build the model for `dataset` (the embedded dataset name or the dataset's label).

        Parameters
        ----------
        dataset : str
            What zoo models and factories that take ``dataset=`` are asked for.
        """
        if self.zoo:
            from .. import zoo

            loaded = zoo.load(self.zoo, dataset, **dict(self.options))
        else:
            func = _resolve_callable(self.factory)  # type: ignore[arg-type]
            kwargs = dict(self.options)
            if _accepts(func, "dataset"):
                kwargs.setdefault("dataset", dataset)
            loaded = func(**kwargs)
        model, meta = loaded if isinstance(loaded, tuple) else (loaded, {})
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{self.source()} returned {describe(model)}, expected a torch.nn.Module")
        return model.eval(), dict(meta or {})


def _model_shorthand(value: Any) -> Any:
    if isinstance(value, str):  # "unet" (a zoo model) or "module:function" (a factory)
        return {"factory": value} if ":" in value else {"zoo": value}
    return value


def _none_is_all(value: Any) -> Any:
    return "all" if value is None else value


Images = Union[Literal["all"], Positive, Annotated[list[Union[StrictStr, Integer]], Field(min_length=1)]]


class DatasetEntry(_Entry):
    """One dataset: embedded (``pdcr_lab.datasets.load(embedded, **options)``) or ``factory(**options)``."""

    embedded: Optional[Label] = Field(None, description="an embedded dataset (lesions, vessels, ...); default: the name")
    factory: Optional[Factory] = Field(None, description="'package.module:function' returning a SegmentationData")
    split: StrictStr = Field("test", description="the split whose images are explained")
    images: Annotated[Images, BeforeValidator(_none_is_all)] = Field(
        "all", description="'all', the first N, or a list of image ids or indices")
    rois: Optional[RoiField] = Field(None, description="this dataset's RoIs; default: the top-level rois")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "embedded" not in value and "factory" not in value and "name" in value:
            return {**value, "embedded": value["name"]}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetEntry:
        if self.embedded is not None and self.factory is not None:
            raise ValueError(f"give either embedded ({self.embedded!r}) or factory ({_callable_name(self.factory)!r}), not both")
        if self.rois is not None and self.rois.kind == "file" and self.images != "all":
            raise ValueError(f"an RoI file chooses the images; remove images={self.images!r} or the file")
        return self

    def source(self) -> str:
        return f"embedded:{self.embedded}" if self.embedded else _callable_name(self.factory)

    def model_key(self) -> str:
        """What zoo models and model factories are asked for: the embedded name, else the label."""
        return self.embedded or self.name

    def load(self) -> Any:
        """The :class:`~pdcr_lab.datasets.SegmentationData` of this entry."""
        if self.embedded:
            from .. import datasets

            return datasets.load(self.embedded, **dict(self.options))
        return _resolve_callable(self.factory)(**dict(self.options))  # type: ignore[arg-type]


def _dataset_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class MethodEntry(BaseModel):
    """One method: a registered explainer (or import path) and the parameters it is called with."""

    model_config = _STRICT

    name: Label = Field(description="label along the store's `method` dim")
    method: Label = Field(description="a registered method, as listed by pdcr_lab.sweep.list_methods(), or 'module:function'")
    params: Annotated[dict[StrictStr, Any], BeforeValidator(_none_is_empty)] = Field(
        default_factory=dict, description="keyword arguments of the explainer")

    def describe(self) -> str:
        return f"methods.{self.name}"


def _method_entries(value: Any) -> Any:
    """``{label: {method: name, **params}}`` or ``[name, ...]`` as entries, in the config's order."""
    if isinstance(value, (list, tuple)):
        return [{"name": v, "method": v} for v in value]
    if not isinstance(value, Mapping):
        return value
    entries = []
    for label, params in value.items():
        params = {} if params is None else params
        if isinstance(params, Mapping):
            rest = {k: v for k, v in params.items() if k != "method"}
            entries.append({"name": label, "method": params.get("method", label), "params": rest})
        else:
            entries.append({"name": label, "method": label, "params": params})
    return entries


_MethodsInput = Union[dict[str, Optional[dict[str, Any]]], list[str]]


class SweepConfig(BaseModel):
    """A parsed, structurally valid sweep config (see the module docstring for the format).

    ``source`` and ``text`` are the config file and its text, stored with the sweep's provenance
    (None for a config given as a mapping).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), title="pdcr-lab sweep config")

    models: Annotated[
        tuple[Annotated[ModelEntry, BeforeValidator(_model_shorthand, json_schema_input_type=Union[str, ModelEntry])], ...],
        Field(min_length=1, description="models: zoo names, or entries with a zoo name or a factory"),
    ]
    datasets: Annotated[
        tuple[Annotated[DatasetEntry, BeforeValidator(_dataset_shorthand, json_schema_input_type=Union[str, DatasetEntry])], ...],
        Field(min_length=1, description="datasets: embedded names, or entries with a factory"),
    ]
    methods: Annotated[
        tuple[MethodEntry, ...],
        BeforeValidator(_method_entries, json_schema_input_type=_MethodsInput),
        Field(min_length=1, description="label -> {method: registered name or 'module:function', **parameters}"),
    ]
    rois: RoiField = Field(default_factory=lambda: RoiRule(auto=16), json_schema_extra={"default": {"auto": 16}},
                           description="RoIs of every image: {auto: side}, [[row, col, h, w], ...] or {file, size}")
    seed: Count = Field(0, description="base seed; each image's seed is derived from it, the dataset and the image id")
    target: Target = Field("ground_truth", description="the mask the outcome compares with")
    device: StrictStr = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    block: Optional[Positive] = Field(None, description="block side in pixels; default: the datasets' patch banks")
    model_cache: Positive = Field(4, description="models a worker keeps loaded")
    resources: Union[Literal["auto"], dict[StrictStr, Amount]] = Field(
        "auto", description="dask worker resources per task, e.g. {GPU: 1}; auto: one GPU when the workers have GPUs")
    probe: StrictBool = Field(True, description="run every model once on each dataset while planning")
    retries: Count = Field(0, description="dask retries of a failed task")
    # Provenance, set by load_config/parse_config; never a key of a config document.
    source: SkipJsonSchema[Optional[str]] = Field(None, exclude=True, description="the config file")
    text: SkipJsonSchema[Optional[str]] = Field(None, exclude=True, description="the config file's text")

    @field_validator("source", "text", mode="before")
    @classmethod
    def _not_in_documents(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and (info.context or {}).get("document"):
            raise ValueError(f"{info.field_name!r} is not a config key (it is set when the config file is read)")
        return value

    @field_validator("models", "datasets", "methods")
    @classmethod
    def _unique_labels(cls, entries: tuple[Any, ...], info: ValidationInfo) -> tuple[Any, ...]:
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if entry.name in seen:
                raise ValueError(f"name {entry.name!r} is used by {info.field_name}[{seen[entry.name]}] and "
                                 f"{info.field_name}[{i}]; give each entry its own name")
            seen[entry.name] = i
        return entries

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able canonical form (stored in the sweep's provenance)."""
        return {
            "models": [{"name": m.name, "source": m.source(), "options": dict(m.options)} for m in self.models],
            "datasets": [
                {
                    "name": d.name,
                    "source": d.source(),
                    "options": dict(d.options),
                    "split": d.split,
                    "images": d.images,
                    "rois": d.rois.as_dict() if d.rois else None,
                }
                for d in self.datasets
            ],
            "methods": {m.name: {"method": m.method, **dict(m.params)} for m in self.methods},
            "rois": self.rois.as_dict(),
            "seed": self.seed,
            "target": self.target,
            "device": self.device,
            "block": self.block,
            "model_cache": self.model_cache,
            "resources": self.resources,
            "probe": self.probe,
            "retries": self.retries,
        }


def config_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of sweep configs, for editors and other tools.

    ``pdcr-lab sweep --schema > sweep.schema.json`` writes it; a YAML config then refers to it in
    its first line: ``# yaml-language-server: $schema=sweep.schema.json``.

    Examples
    --------
    >>> schema = config_schema()
    >>> sorted(schema["required"]), schema["additionalProperties"]
    (['datasets', 'methods', 'models'], False)
    >>> schema["properties"]["seed"]["minimum"]
    0
    """
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **SweepConfig.model_json_schema()}


# -- pydantic's errors as the config's key paths -----------------------------------------------------
# pydantic locates an error in its own terms: field names, list positions, dict keys, but also the
# member of a union it tried and normalised forms (a shorthand string turned into a mapping, the
# `methods` mapping validated as a list). Users need the path of the key they wrote, so the
# translation below walks the config as written; it is custom code because pydantic has no notion
# of the document an input came from.

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "callable_type": "a callable (configs written in Python)",
    "literal_error": "{expected}",
    "greater_than_equal": "a value >= {ge:g}",
    "greater_than": "a value > {gt:g}",
    "less_than_equal": "a value <= {le:g}",
    "too_short": "at least {min_length} item(s)",
    "too_long": "at most {max_length} item(s)",
}
_PATTERNS = {LABEL_PATTERN: "a non-blank string", IMPORT_PATTERN: "an import path 'package.module:function'"}


def _user_path(loc: tuple[Any, ...], data: Any, missing: bool) -> str:
    """The path of the key the user wrote (``datasets[0].rois[1][2]``) for pydantic's `loc`."""
    path, node = "", data
    for i, key in enumerate(loc):
        if isinstance(node, Mapping) and key in node:
            path, node = f"{path}.{key}", node[key]
        elif isinstance(node, Mapping) and isinstance(key, int) and 0 <= key < len(node):
            label = list(node)[key]  # the `methods` mapping is validated as a list in key order
            path, node = f"{path}.{label}", node[label]
        elif isinstance(node, (list, tuple)) and isinstance(key, int) and -len(node) <= key < len(node):
            path, node = f"{path}[{key}]", node[key]
        elif missing and i == len(loc) - 1:
            path += f"[{key}]" if isinstance(key, int) else f".{key}"
        # anything else is pydantic's own (a union member, a normalised form): no key of the config
    return path.lstrip(".")


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _along(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Follow pydantic's `loc` through the models: the model reached and the last field passed."""
    model: type[BaseModel] | None = SweepConfig
    field = None
    for key in loc:
        if model is not None and isinstance(key, str) and key in model.model_fields:
            field = model.model_fields[key]
            model = _model_in(field.annotation)
    return model, field


def _explain(path: str, errors: Sequence[Mapping[str, Any]]) -> str:
    """One line for the errors pydantic found at one key (several when a union tried each form)."""
    head = f"{path}: " if path else ""
    first = errors[0]
    if first["type"] == "extra_forbidden":
        model, _ = _along(tuple(first["loc"])[:-1])
        keys = sorted(name for name, field in model.model_fields.items() if not field.exclude) if model else []
        allowed = f"; allowed keys: {', '.join(keys)}" if keys else ""
        return f"{head}unknown key (value {describe(first['input'])}){allowed}"
    _, field = _along(tuple(first["loc"]))
    about = f" ({field.description})" if field is not None and field.description else ""
    if first["type"] == "missing":
        return f"{head}required but missing{about}"
    if first["type"] in ("value_error", "assertion_error"):
        return f"{head}{first['ctx']['error']}"
    expected: list[str] = []
    for err in errors:
        ctx = err.get("ctx") or {}
        if err["type"] == "string_pattern_mismatch":
            text = _PATTERNS.get(ctx.get("pattern"), err["msg"])
        elif err["type"] in _EXPECTED:
            text = _EXPECTED[err["type"]].format(**ctx)
        else:
            text = err["msg"].removeprefix("Input should be ")
        if text not in expected:
            expected.append(text)
    return f"{head}got {describe(first['input'])}; expected {' or '.join(expected)}{about}"


def _config_error(exc: ValidationError, data: Any, source: str | None) -> ConfigError:
    groups: dict[str, list[Any]] = {}
    for err in exc.errors(include_url=False):
        groups.setdefault(_user_path(tuple(err["loc"]), data, err["type"] == "missing"), []).append(err)

    def below(inner: str, outer: str) -> bool:
        return inner != outer and (not outer or inner.startswith(outer) and inner[len(outer)] in ".[")

    # A union tries each of its forms; when the value has the shape of one (a list, a mapping), the
    # errors inside it say more than "not a string" from the other forms.
    paths = [p for p in groups if not any(below(q, p) for q in groups)]
    where = "config" if source is None else f"config {source!r}"
    return ConfigError("\n".join(f"{where}: {_explain(p, groups[p])}" for p in paths))


# -- reading -----------------------------------------------------------------------------------------


def parse_config(data: Mapping[str, Any], *, base_dir: str | os.PathLike = ".", source: str | None = None,
                 text: str | None = None) -> SweepConfig:
    """Check a config's structure and build a :class:`SweepConfig` (no models or data are loaded).

    Parameters
    ----------
    data : mapping
        The parsed YAML/TOML document (or a dict written in Python; factories may then be callables).
    base_dir : path
        Folder that relative RoI file paths are resolved against (the config file's folder).
    source : str, optional
        The config file, named in error messages and stored with the sweep.
    text : str, optional
        The config file's text, stored with the sweep.

    Raises
    ------
    ConfigError
        One line per problem: the config, the key's path, the value and what was expected.
    """
    try:
        config = SweepConfig.model_validate(data, context={"base_dir": Path(base_dir), "document": True})
    except ValidationError as exc:
        raise _config_error(exc, data, source) from None
    return config.model_copy(update={"source": source, "text": text})


def load_config(path: str | os.PathLike) -> SweepConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) sweep config.

    Parameters
    ----------
    path : str or os.PathLike
        The config file; relative RoI files in it are relative to its folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {str(path)!r} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:  # pragma: no cover - pyyaml is a sweep requirement
                raise ConfigError("reading YAML configs needs PyYAML: pip install pyyaml") from None
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config {str(path)!r} has an unknown suffix {suffix!r}; expected .yaml, .yml or .toml")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"config {str(path)!r} cannot be parsed: {exc}") from exc
    return parse_config(data or {}, base_dir=path.parent, source=str(path.resolve()), text=text)


# -- resolution: load what the config names and check it against the data ------------------------
# Custom code on purpose: pydantic checks a document against declared types, while these checks need
# the world outside it (the zoo, the datasets and their splits, explainer signatures, image sizes).


@dataclass(frozen=True)
class ResolvedMethod:
    entry: MethodEntry
    method: Method
    params: Mapping[str, Any]

    @property
    def outcome(self) -> str:
        from ..outcomes import get_outcome

        name = self.params.get("outcome", parameter_default(self.method.func, "outcome"))
        try:
            return get_outcome(name).name if name is not None else "none"
        except ValueError:
            return str(name)

    @property
    def units(self) -> str:
        from ..outcomes import get_outcome

        try:
            return get_outcome(self.outcome).units
        except ValueError:
            return "none"


@dataclass(frozen=True)
class Plan:
    """Everything a sweep will compute, resolved against the data: the store's coordinates.

    Arrays are indexed (dataset, image[, roi]); a dataset with fewer images or an image with fewer
    RoIs than the largest is padded (``image_id == ""``, ``roi_height == 0``) and has no task there.
    ``bank_ids`` are the natural banks' content hashes ("" without a bank); ``bank_provenance`` is
    their provenance as JSON, stored once per sweep instead of once per task.
    """

    config: SweepConfig  #: the validated config
    methods: tuple[ResolvedMethod, ...]  #: its methods with their explainers and full parameters
    shape: tuple[int, int]  #: (height, width) of every image
    block: int  #: block side in pixels
    image_ids: np.ndarray  #: (dataset, image) ids, "" for padding
    image_index: np.ndarray  #: (dataset, image) positions in their split, -1 for padding
    image_sha1: np.ndarray  #: (dataset, image) SHA-1 of the pixels, checked by the workers
    rois: np.ndarray  #: (dataset, image, roi, 4) boxes [row, col, height, width]
    n_rois: np.ndarray  #: (dataset, image) RoIs per image
    seeds: np.ndarray  #: (dataset, image) derived seeds (derive_seed)
    bank_ids: tuple[str, ...]  #: per dataset
    bank_provenance: str  #: JSON
    fingerprint: str  #: hash of everything that shapes the numbers; a store belongs to one

    @property
    def models(self) -> tuple[ModelEntry, ...]:
        return self.config.models

    @property
    def datasets(self) -> tuple[DatasetEntry, ...]:
        return self.config.datasets

    @property
    def grid(self) -> tuple[int, int]:
        return self.shape[0] // self.block, self.shape[1] // self.block

    @property
    def sizes(self) -> dict[str, int]:
        gy, gx = self.grid
        return {
            "model": len(self.models),
            "dataset": len(self.datasets),
            "image": int(self.image_ids.shape[1]),
            "roi": int(self.rois.shape[2]),
            "method": len(self.methods),
            "block_y": gy,
            "block_x": gx,
            "y": self.shape[0],
            "x": self.shape[1],
        }

    def tasks(self) -> list[tuple[int, int, int, int]]:
        """(model, dataset, image, method) indices of the real tasks, in submission order.

        Grouped by model, then dataset, so that a worker meets one model for a long stretch and
        loads it once.
        """
        return [
            (m, d, i, k)
            for m in range(len(self.models))
            for d in range(len(self.datasets))
            for k in range(len(self.methods))
            for i in range(self.image_ids.shape[1])
            if self.image_ids[d, i]
        ]


def _where(section: str, index: int, entry: Any) -> str:
    return f"{section}[{index}] ({entry.name!r})"


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _binds(func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Raise TypeError when `func` cannot be called with these arguments (nothing is called)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: only a call would tell
        return
    signature.bind(*args, **kwargs)


def _resolve_methods(config: SweepConfig) -> tuple[ResolvedMethod, ...]:
    out = []
    for i, entry in enumerate(config.methods):
        try:
            method = get_method(entry.method)
        except (KeyError, ImportError, ValueError, TypeError) as exc:
            raise _fail(entry.describe(), str(exc).strip("'\"")) from None
        reserved = sorted(set(entry.params) & set(SUPPLIED))
        if reserved:
            raise _fail(entry.describe(), f"parameter(s) {reserved} are set by the sweep (seed from the base seed, block at the top level)")
        accepted = accepted_parameters(method.func)
        if accepted is not None:
            unknown = sorted(set(entry.params) - accepted)
            if unknown:
                raise _fail(entry.describe(), f"unknown parameter(s) {unknown}; {_callable_name(method.func)} accepts {sorted(accepted - set(SUPPLIED))}")
        try:  # the explainer's own checks, without a model
            params = method.check_options(entry.params)
        except OptionError as exc:
            key = f"methods[{i}].params" + (f".{exc.key}" if exc.key else "")
            raise _fail(f"{key} ({entry.name!r}, method {entry.method!r})", str(exc)) from None
        # What the tasks pass (see _tasks._call); block, bank and device only where accepted.
        supplied = {k: None for k in ("bank", "block", "device") if method.accepts(k)}
        try:
            _binds(method.func, None, None, roi=None, target=None, seed=0, **supplied, **params)
        except TypeError as exc:
            raise _fail(entry.describe(), f"{_callable_name(method.func)} cannot be called as an explainer "
                                          f"(model, image, roi=, target=, seed=, **params): {exc}") from None
        out.append(ResolvedMethod(entry, method, params))
    return tuple(out)


def _check_device(config: SweepConfig, local: bool) -> None:
    """The config's `device`; CUDA devices of remote workers are not this machine's to check."""
    if config.device == "auto":
        return
    if not local:
        import torch

        try:
            if torch.device(config.device).type == "cuda":
                return
        except RuntimeError:
            pass  # check_device says what is wrong with it
    try:
        check_device(config.device)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"device: {exc}") from None


def _factory(where: str, entry: ModelEntry | DatasetEntry) -> Callable[..., Any]:
    """The entry's factory, imported (its module's code runs) and checked to be callable; not called."""
    try:
        return _resolve_callable(entry.factory)  # type: ignore[arg-type]
    except (ImportError, ValueError, TypeError) as exc:
        raise _fail(where, f"factory {entry.source()!r}: {exc}") from None


def _check_call(where: str, source: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Check that ``func(*args, **kwargs)`` binds to `func`'s signature; never call it."""
    try:
        _binds(func, *args, **kwargs)
    except TypeError as exc:
        raise _fail(where, f"{source!r} cannot be called with options {sorted(kwargs)}: {exc}") from None


def _check_models(config: SweepConfig) -> None:
    zoo_names: list[str] | None = None
    for i, entry in enumerate(config.models):
        where = _where("models", i, entry)
        if entry.zoo:
            from .. import zoo

            if zoo_names is None:
                try:
                    zoo_names = list(zoo.list())
                except Exception as exc:
                    raise _fail(where, f"the model zoo (pdcr_lab.zoo) is not available: {exc}") from None
            if entry.zoo not in zoo_names:
                raise _fail(where, f"unknown zoo model {entry.zoo!r}; zoo models: {sorted(set(zoo_names))}")
            _check_call(where, "pdcr_lab.zoo:load", zoo.load, entry.zoo, "", **dict(entry.options))
        else:
            func = _factory(where, entry)
            kwargs = dict(entry.options)
            if _accepts(func, "dataset"):  # what ModelEntry.load passes
                kwargs.setdefault("dataset", "")
            _check_call(where, f"factory {entry.source()}", func, **kwargs)


def _check_datasets(config: SweepConfig) -> None:
    from .. import datasets

    for d, entry in enumerate(config.datasets):
        where = _where("datasets", d, entry)
        if entry.embedded:
            known = datasets.list_datasets()
            if entry.embedded not in known:
                raise _fail(where, f"unknown dataset {entry.embedded!r}; embedded datasets: {known}, or give a factory")
            _check_call(where, "pdcr_lab.datasets:load", datasets.load, entry.embedded, **dict(entry.options))
        else:
            _check_call(where, f"factory {entry.source()}", _factory(where, entry), **dict(entry.options))
        rule = entry.rois or config.rois
        if rule.kind == "file":
            from ..datasets import read_roi_list

            try:
                read_roi_list(rule.file, roi=rule.side)  # type: ignore[arg-type]
            except (OSError, ValueError) as exc:
                raise _fail(where, f"RoI file: {exc}") from None


def check_config(config: SweepConfig, *, local: bool = True) -> tuple[ResolvedMethod, ...]:
    """Every check of `config` that calls nothing it names: what a dry run does.

    Methods: registered or importable, their parameters valid by the explainer's own checks
    (:meth:`pdcr_lab.explainers.ExplainerSpec.check_options`) and its signature able to take them;
    the device; model and dataset factories importable, callable and taking their options (their
    modules are imported, which runs module code; the factories themselves are not called); RoI
    files readable. Images, RoIs on the images and the models' outputs need the data and the models:
    :func:`resolve` checks them.

    Parameters
    ----------
    config : SweepConfig
        A structurally valid config.
    local : bool
        The workers run on this machine (a local cluster): a CUDA `device` must exist here.

    Raises
    ------
    ConfigError
        Naming the config file (when there is one) and the offending entry.
    """
    try:
        methods = _resolve_methods(config)
        _check_device(config, local)
        _check_models(config)
        _check_datasets(config)
    except ConfigError as exc:
        if config.source is None:
            raise
        raise ConfigError(f"config {config.source!r}: {exc}") from None
    return methods


def _load_dataset(entry: DatasetEntry, where: str) -> Any:
    try:
        data = entry.load()
    except ConfigError:
        raise
    except Exception as exc:
        raise _fail(where, f"loading {entry.source()} failed: {type(exc).__name__}: {exc}") from None
    for attr in ("images", "masks", "ids"):
        if not callable(getattr(data, attr, None)):
            raise _fail(where, f"{entry.source()} returned {type(data).__name__}, expected a SegmentationData")
    splits = tuple(getattr(data, "splits", ()))
    if entry.split not in splits:
        raise _fail(where, f"split {entry.split!r} does not exist; splits: {list(splits)}")
    return data


def _select_images(entry: DatasetEntry, where: str, ids: list[str], rule: RoiRule) -> tuple[list[int], dict[str, list[tuple[int, int, int, int]]]]:
    from ..datasets import read_roi_list

    from_file: dict[str, list[tuple[int, int, int, int]]] = {}
    if rule.kind == "file":
        try:
            specs = read_roi_list(rule.file, roi=rule.side)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            raise _fail(where, f"RoI file: {exc}") from None
        for spec in specs:
            if spec.image_id not in ids:
                raise _fail(where, f"RoI file {rule.file!r} names image {spec.image_id!r}, which is not in split {entry.split!r}")
            from_file.setdefault(spec.image_id, []).append(spec.box)
        return [ids.index(i) for i in from_file], from_file
    sel = entry.images
    if sel == "all":
        chosen = list(range(len(ids)))
    elif isinstance(sel, int):
        if sel > len(ids):
            raise _fail(where, f"images={sel} but split {entry.split!r} has {len(ids)} images")
        chosen = list(range(sel))
    else:
        chosen = []
        for item in sel:
            if isinstance(item, str):
                if item not in ids:
                    raise _fail(where, f"image {item!r} is not in split {entry.split!r} (ids like {ids[:3]})")
                chosen.append(ids.index(item))
            else:
                if not -len(ids) <= item < len(ids):
                    raise _fail(where, f"image index {item} is out of range for split {entry.split!r} of {len(ids)} images")
                chosen.append(item % len(ids))
    if len(set(chosen)) != len(chosen):
        raise _fail(where, "the image selection names an image twice")
    if not chosen:
        raise _fail(where, f"no images selected from split {entry.split!r}")
    return chosen, from_file


def _check_box(where: str, image_id: str, box: tuple[int, int, int, int], shape: tuple[int, int], block: int) -> None:
    h, w = shape
    r, c, bh, bw = box
    if r < 0 or c < 0 or r + bh > h or c + bw > w:
        raise _fail(where, f"RoI {list(box)} (row, col, height, width) of image {image_id!r} lies outside the {h}x{w} image")
    rows = range(r // block, (r + bh - 1) // block + 1)
    cols = range(c // block, (c + bw - 1) // block + 1)
    if len(rows) * len(cols) >= (h // block) * (w // block):
        raise _fail(where, f"RoI {list(box)} of image {image_id!r} covers every {block}x{block} block: nothing is left to intervene on")


def _probe(model_entry: ModelEntry, dataset_entry: DatasetEntry, where: str, image: Any,
           methods: Sequence[ResolvedMethod]) -> None:
    """Load the model and run it once on one image, so a broken pair fails before the sweep."""
    import torch

    from ..adapters import ModelAdapter

    try:
        model, _ = model_entry.load(dataset_entry.model_key())
    except Exception as exc:
        raise ConfigError(f"{where}: loading the model failed: {type(exc).__name__}: {exc}") from None
    key = next((m.params["output_key"] for m in methods if "output_key" in m.params), None)
    adapter = ModelAdapter(model, key)
    expected = adapter.expected_channels()
    if expected is not None and expected != image.shape[0]:
        raise ConfigError(f"{where}: the images have {image.shape[0]} channels but the model's first layer expects {expected}")
    try:
        with torch.inference_mode():
            out = adapter.logits(image[None].to(adapter.device()))
    except Exception as exc:
        raise ConfigError(f"{where}: the model fails on an image of shape {tuple(image.shape)}: {type(exc).__name__}: {exc}") from None
    if tuple(out.shape[-2:]) != tuple(image.shape[-2:]):
        raise ConfigError(f"{where}: the model's output is {tuple(out.shape[-2:])}, the image {tuple(image.shape[-2:])}; a per-pixel output is needed")


def resolve(config: SweepConfig, *, local: bool = True) -> Plan:
    """Check `config` against the models and the data and compute the sweep's :class:`Plan`.

    First :func:`check_config` (which calls nothing); then every dataset is loaded (its factory
    called) and, with ``probe: true``, every model built (its factory called) and run once on one
    image of each dataset, in this process; no cluster is involved.

    Parameters
    ----------
    config : SweepConfig
        A structurally valid config (:func:`parse_config`, :func:`load_config`).
    local : bool
        The workers run on this machine (a local cluster): a CUDA `device` must exist here.

    Raises
    ------
    ConfigError
        Naming the config file (when there is one) and the offending entry.
    """
    methods = check_config(config, local=local)
    try:
        return _resolve(config, methods)
    except ConfigError as exc:
        if config.source is None:
            raise
        raise ConfigError(f"config {config.source!r}: {exc}") from None


def _resolve(config: SweepConfig, methods: tuple[ResolvedMethod, ...]) -> Plan:
    from ..rois import boundary_roi

    shape: tuple[int, int] | None = None
    block = config.block
    per_dataset = []
    bank_ids: list[str] = []
    bank_provenance: dict[str, Any] = {}
    for d, entry in enumerate(config.datasets):
        where = _where("datasets", d, entry)
        data = _load_dataset(entry, where)
        images, masks, ids = data.images(entry.split), data.masks(entry.split), data.ids(entry.split)
        this_shape = (int(images.shape[-2]), int(images.shape[-1]))
        if shape is None:
            shape = this_shape
        elif this_shape != shape:
            raise _fail(where, f"images are {this_shape[0]}x{this_shape[1]} but {_where('datasets', 0, config.datasets[0])} has {shape[0]}x{shape[1]}; one store holds one block grid, run a sweep per size")
        try:
            bank = data.bank
            bank_block, bank_id = int(bank.block), str(bank.id)
            bank_provenance[entry.name] = dict(bank.provenance, id=bank_id, size=len(bank), block=bank_block)
        except (ValueError, AttributeError):
            bank_block, bank_id = None, ""
        bank_ids.append(bank_id)
        if block is None:
            block = bank_block
        if block is None:
            raise _fail(where, "has no patch bank to take the block size from; set `block` at the top level")
        if bank_block is not None and bank_block != block:
            raise _fail(where, f"its patch bank holds {bank_block}x{bank_block} blocks but the sweep uses block={block}")
        if shape[0] % block or shape[1] % block:
            raise _fail(where, f"block={block} does not tile the {shape[0]}x{shape[1]} images")
        rule = entry.rois or config.rois
        chosen, from_file = _select_images(entry, where, ids, rule)
        rows = []
        for index in chosen:
            image_id = ids[index]
            if rule.kind == "boxes":
                boxes = list(rule.boxes)
            elif rule.kind == "file":
                boxes = from_file[image_id]
            else:
                try:
                    boxes = [boundary_roi(masks[index], size=rule.side, block=block)]
                except ValueError as exc:
                    raise _fail(where, f"automatic RoI of image {image_id!r}: {exc}") from None
            for box in boxes:
                _check_box(where, image_id, box, shape, block)
            digest = hashlib.sha1(np.ascontiguousarray(images[index].numpy()).tobytes()).hexdigest()
            rows.append((image_id, index, digest, boxes))
        per_dataset.append(rows)
        if config.probe:
            for m, model in enumerate(config.models):
                _probe(model, entry, f"{_where('models', m, model)} on {where}", images[chosen[0]], methods)
        del data, images, masks, bank
    if shape is None or block is None:  # pragma: no cover - parse_config requires datasets
        raise ConfigError("datasets is empty")
    n_img = max(len(rows) for rows in per_dataset)
    n_roi = max(len(r[3]) for rows in per_dataset for r in rows)
    n_d = len(config.datasets)
    image_ids = np.full((n_d, n_img), "", dtype=object)
    image_index = np.full((n_d, n_img), -1, dtype=np.int64)
    image_sha1 = np.full((n_d, n_img), "", dtype=object)
    rois = np.zeros((n_d, n_img, n_roi, 4), dtype=np.int64)
    n_rois = np.zeros((n_d, n_img), dtype=np.int64)
    seeds = np.full((n_d, n_img), -1, dtype=np.int64)
    for d, rows in enumerate(per_dataset):
        for i, (image_id, index, digest, boxes) in enumerate(rows):
            image_ids[d, i], image_index[d, i], image_sha1[d, i] = image_id, index, digest
            rois[d, i, : len(boxes)] = boxes
            n_rois[d, i] = len(boxes)
            seeds[d, i] = derive_seed(config.seed, config.datasets[d].name, image_id)
    identity = {
        "schema_version": SCHEMA_VERSION,
        "models": [[m.name, m.key()] for m in config.models],
        "datasets": [[d.name, d.key(), d.split] for d in config.datasets],
        "images": image_ids.tolist(),
        "sha1": image_sha1.tolist(),
        "banks": bank_ids,
        "rois": rois.tolist(),
        "methods": [[m.entry.name, _callable_name(m.method.func), m.method.multi_roi, dict(m.params)] for m in methods],
        "seed": config.seed,
        "target": config.target,
        "block": block,
        "shape": list(shape),
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return Plan(config, methods, shape, int(block), image_ids, image_index, image_sha1, rois, n_rois, seeds,
                tuple(bank_ids), json.dumps(bank_provenance, sort_keys=True, default=str), fingerprint)
