"""Sweep configs: YAML/TOML text -> a :class:`SweepConfig` -> a validated :class:`Plan`.

Everything a sweep needs is checked here, in the driver, before a cluster starts or a byte is
written: unknown keys, models, datasets, methods and method parameters, image selections, RoIs
outside the image, block grids that do not agree. Every error is a :class:`ConfigError` whose
message starts with the offending entry (``models[1] ('resnet'): ...``).

Format (YAML shown; TOML has the same structure)::

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
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import describe
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
    "resolve",
    "derive_seed",
]

TARGETS = ("ground_truth", "prediction")
_TOP = {
    "models", "datasets", "methods", "rois", "seed", "target", "device", "block",
    "model_cache", "resources", "probe", "retries",
}


class ConfigError(ValueError):
    """A sweep config is invalid; the message starts with the offending entry."""


def derive_seed(base: int, dataset: str, image_id: str) -> int:
    """Seed of one image's explanations: a hash of (base seed, dataset label, image id).

    It depends on labels, never on positions, so adding a model, a method or an image to a config
    leaves every other seed unchanged; all models and methods of one image share it (common random
    draws make maps of different models directly comparable).

    Examples
    --------
    >>> derive_seed(0, "lesions", "lesions_0400") == derive_seed(0, "lesions", "lesions_0400")
    True
    >>> derive_seed(0, "lesions", "lesions_0400") != derive_seed(1, "lesions", "lesions_0400")
    True
    """
    digest = hashlib.sha256(json.dumps([int(base), str(dataset), str(image_id)]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


# -- entries --------------------------------------------------------------------------------------


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


class _Sourced:
    """What model and dataset entries share: a label, a source (zoo, embedded, factory) and options."""

    name: str
    options: Mapping[str, Any]
    where: str

    def source(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.where} ({self.name!r})"

    def key(self) -> str:
        """Identity of what this entry loads (the per-worker cache key)."""
        return json.dumps([self.source(), dict(self.options)], sort_keys=True, default=str)


@dataclass(frozen=True)
class ModelEntry(_Sourced):
    """One model of a sweep: a zoo model, or ``factory(**options)`` (+ ``dataset=`` if it takes one).

    A factory returns an ``nn.Module`` or ``(module, metadata dict)``. Entries are small and
    picklable: workers call :meth:`load` themselves and keep the model (see ``_tasks``).
    """

    name: str
    zoo: str | None = None
    factory: str | Callable[..., Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    where: str = "models[0]"

    def source(self) -> str:
        return f"zoo:{self.zoo}" if self.zoo else _callable_name(self.factory)

    def load(self, dataset: str) -> tuple[Any, dict[str, Any]]:
        """Build the model for `dataset` (the embedded dataset name or the dataset's label)."""
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


@dataclass(frozen=True)
class RoiRule:
    """How the RoIs of an image are chosen: fixed ``boxes``, ``auto`` (boundary_roi) or a ``file``."""

    kind: str
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    size: int = 16
    file: str | None = None
    where: str = "rois"

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "boxes":
            return {"boxes": [list(b) for b in self.boxes]}
        if self.kind == "auto":
            return {"auto": self.size}
        return {"file": self.file, "size": self.size}


@dataclass(frozen=True)
class DatasetEntry(_Sourced):
    """One dataset: embedded (``pdcr_lab.datasets.load(embedded, **options)``) or ``factory(**options)``."""

    name: str
    embedded: str | None = None
    factory: str | Callable[..., Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    split: str = "test"
    images: Any = "all"
    rois: RoiRule | None = None
    where: str = "datasets[0]"

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


@dataclass(frozen=True)
class MethodEntry:
    """One method: a registered explainer (or import path) and the parameters it is called with."""

    name: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    where: str = "methods"

    def describe(self) -> str:
        return f"methods.{self.name}"


@dataclass(frozen=True)
class SweepConfig:
    """A parsed, structurally valid sweep config (see the module docstring for the format)."""

    models: tuple[ModelEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    methods: tuple[MethodEntry, ...]
    rois: RoiRule
    seed: int = 0
    target: str = "ground_truth"
    device: str = "auto"
    block: int | None = None
    model_cache: int = 4
    resources: Any = "auto"
    probe: bool = True
    retries: int = 0
    source: str | None = None
    text: str | None = None

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


# -- parsing ---------------------------------------------------------------------------------------


def _fields(value: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys {sorted(allowed)}, got {describe(value)}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    return dict(value)


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}, got {describe(value)}")
    return int(value)


def _label(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: name must be a non-empty string, got {describe(value)}")
    return value


def _options(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.options must be a mapping of keyword arguments, got {describe(value)}")
    return dict(value)


def _source(value: Any, where: str) -> str | Callable[..., Any]:
    if callable(value):
        return value
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{where}.factory must be an import path 'package.module:function', got {describe(value)}")
    return value


def _parse_model(value: Any, where: str) -> ModelEntry:
    if isinstance(value, str):
        value = {"zoo": value} if ":" not in value else {"factory": value}
    f = _fields(value, where, ("name", "zoo", "factory", "options"))
    if "zoo" in f and "factory" in f:
        raise ConfigError(f"{where}: give either zoo or factory, not both")
    if "factory" in f:
        factory = _source(f["factory"], where)
        default = _callable_name(factory).rpartition(":")[2].rpartition(".")[2]
        name = _label(f.get("name", default), where)
        return ModelEntry(name, None, factory, _options(f.get("options"), where), where)
    zoo_name = _label(f.get("zoo", f.get("name")), where) if ("zoo" in f or "name" in f) else None
    if zoo_name is None:
        raise ConfigError(f"{where}: give a zoo model name (zoo: unet) or a factory (factory: module:function)")
    return ModelEntry(_label(f.get("name", zoo_name), where), zoo_name, None, _options(f.get("options"), where), where)


def _parse_box(value: Any, where: str) -> tuple[int, int, int, int]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 4
    if not ok or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in value):
        raise ConfigError(f"{where} must be a box [row, col, height, width] of 4 integers, got {describe(value)}")
    box = tuple(int(v) for v in value)
    if box[2] < 1 or box[3] < 1:
        raise ConfigError(f"{where}={list(box)} is empty; height and width must be >= 1")
    return box  # type: ignore[return-value]


def _parse_rois(value: Any, where: str, base_dir: Path) -> RoiRule:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            raise ConfigError(f"{where} is an empty list; give at least one [row, col, height, width] box")
        return RoiRule("boxes", tuple(_parse_box(b, f"{where}[{i}]") for i, b in enumerate(value)), where=where)
    f = _fields(value, where, ("auto", "boxes", "file", "size"))
    kinds = [k for k in ("auto", "boxes", "file") if k in f]
    if len(kinds) != 1:
        raise ConfigError(f"{where} must have exactly one of 'auto', 'boxes', 'file', got {sorted(f)}")
    kind = kinds[0]
    if kind == "boxes":
        if "size" in f:
            raise ConfigError(f"{where}: 'size' goes with 'auto' or 'file', not with 'boxes'")
        return _parse_rois(f["boxes"], f"{where}.boxes", base_dir)
    if kind == "auto":
        if "size" in f:
            raise ConfigError(f"{where}: write the RoI side as auto: {f['size']} (no separate 'size')")
        return RoiRule("auto", size=_int(f["auto"], f"{where}.auto", 1), where=where)
    path = f["file"]
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{where}.file must be a path, got {describe(path)}")
    full = Path(path) if Path(path).is_absolute() else base_dir / path
    return RoiRule("file", size=_int(f.get("size", 32), f"{where}.size", 1), file=str(full), where=where)


def _parse_images(value: Any, where: str) -> Any:
    if value is None or value == "all":
        return "all"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return _int(value, where, 1)
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        items = []
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, (str, int, np.integer)):
                raise ConfigError(f"{where}[{i}] must be an image id (string) or an index, got {describe(v)}")
            items.append(v if isinstance(v, str) else int(v))
        return items
    raise ConfigError(f"{where} must be 'all', a count, or a list of image ids or indices, got {describe(value)}")


def _parse_dataset(value: Any, where: str, base_dir: Path) -> DatasetEntry:
    if isinstance(value, str):
        value = {"name": value}
    f = _fields(value, where, ("name", "embedded", "factory", "options", "split", "images", "rois"), ("name",))
    name = _label(f["name"], where)
    if "embedded" in f and "factory" in f:
        raise ConfigError(f"{where}: give either embedded or factory, not both")
    factory = _source(f["factory"], where) if "factory" in f else None
    embedded = None if factory else _label(f.get("embedded", name), where)
    split = f.get("split", "test")
    if not isinstance(split, str):
        raise ConfigError(f"{where}.split must be a split name such as 'test', got {describe(split)}")
    rois = _parse_rois(f["rois"], f"{where}.rois", base_dir) if "rois" in f else None
    images = _parse_images(f.get("images"), f"{where}.images")
    if rois is not None and rois.kind == "file" and images != "all":
        raise ConfigError(f"{where}: an RoI file chooses the images; remove 'images' or the file")
    return DatasetEntry(name, embedded, factory, _options(f.get("options"), where), split, images, rois, where)


def _parse_methods(value: Any) -> tuple[MethodEntry, ...]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = {str(v): {} for v in value}
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"methods must be a non-empty mapping label -> parameters, got {describe(value)}")
    entries = []
    for label, params in value.items():
        where = f"methods.{label}"
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise ConfigError(f"{where} must be a mapping of parameters, got {describe(params)}")
        params = dict(params)
        method = params.pop("method", label)
        if not isinstance(method, str):
            raise ConfigError(f"{where}.method must be a registered name or 'module:function', got {describe(method)}")
        entries.append(MethodEntry(_label(label, where), method, params, where))
    return tuple(entries)


def _unique(entries: Sequence[Any], section: str) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.name in seen:
            raise ConfigError(f"{entry.where}: duplicate name {entry.name!r} (also {seen[entry.name]}); give each {section} entry its own name")
        seen[entry.name] = entry.where


def parse_config(data: Mapping[str, Any], *, base_dir: str | os.PathLike = ".", source: str | None = None,
                 text: str | None = None) -> SweepConfig:
    """Check a config's structure and build a :class:`SweepConfig` (no models or data are loaded).

    Parameters
    ----------
    data : mapping
        The parsed YAML/TOML document (or a dict written in Python; factories may then be callables).
    base_dir : path
        Folder that relative RoI file paths are resolved against (the config file's folder).
    """
    f = _fields(data, "config", sorted(_TOP), ("models", "datasets", "methods"))
    base = Path(base_dir)
    for section in ("models", "datasets"):
        if not isinstance(f[section], Sequence) or isinstance(f[section], str) or not f[section]:
            raise ConfigError(f"{section} must be a non-empty list, got {describe(f[section])}")
    models = tuple(_parse_model(v, f"models[{i}]") for i, v in enumerate(f["models"]))
    datasets = tuple(_parse_dataset(v, f"datasets[{i}]", base) for i, v in enumerate(f["datasets"]))
    methods = _parse_methods(f["methods"])
    for entries, section in ((models, "models"), (datasets, "datasets")):
        _unique(entries, section)
    target = f.get("target", "ground_truth")
    if target not in TARGETS:
        raise ConfigError(f"target={target!r} is not supported; expected one of {list(TARGETS)}")
    device = f.get("device", "auto")
    if not isinstance(device, str):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {describe(device)}")
    block = f.get("block")
    resources = f.get("resources", "auto")
    if resources != "auto" and not (isinstance(resources, Mapping) and all(isinstance(v, (int, float)) for v in resources.values())):
        raise ConfigError(f"resources must be 'auto' or a mapping such as {{GPU: 1}}, got {describe(resources)}")
    probe = f.get("probe", True)
    if not isinstance(probe, bool):
        raise ConfigError(f"probe must be true or false, got {describe(probe)}")
    return SweepConfig(
        models=models,
        datasets=datasets,
        methods=methods,
        rois=_parse_rois(f.get("rois", {"auto": 16}), "rois", base),
        seed=_int(f.get("seed", 0), "seed"),
        target=target,
        device=device,
        block=None if block is None else _int(block, "block", 1),
        model_cache=_int(f.get("model_cache", 4), "model_cache", 1),
        resources=resources if resources == "auto" else dict(resources),
        probe=probe,
        retries=_int(f.get("retries", 0), "retries"),
        source=source,
        text=text,
    )


def load_config(path: str | os.PathLike) -> SweepConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) sweep config."""
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

    config: SweepConfig
    methods: tuple[ResolvedMethod, ...]
    shape: tuple[int, int]
    block: int
    image_ids: np.ndarray
    image_index: np.ndarray
    image_sha1: np.ndarray
    rois: np.ndarray
    n_rois: np.ndarray
    seeds: np.ndarray
    bank_ids: tuple[str, ...]
    bank_provenance: str
    fingerprint: str

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


def _fail(entry: Any, message: str) -> ConfigError:
    return ConfigError(f"{entry.describe()}: {message}")


def _choices() -> dict[str, Any]:
    """String parameters whose values can be checked before the sweep (shared by the explainers)."""
    from ..interventions import INTERVENTIONS
    from ..outcomes import OUTCOMES

    return {"intervention": INTERVENTIONS, "outcome": OUTCOMES}


def _resolve_methods(config: SweepConfig) -> tuple[ResolvedMethod, ...]:
    out = []
    for entry in config.methods:
        try:
            method = get_method(entry.method)
        except (KeyError, ImportError, ValueError, TypeError) as exc:
            raise _fail(entry, str(exc).strip("'\"")) from None
        reserved = sorted(set(entry.params) & set(SUPPLIED))
        if reserved:
            raise _fail(entry, f"parameter(s) {reserved} are set by the sweep (seed from the base seed, block at the top level)")
        accepted = accepted_parameters(method.func)
        if accepted is not None:
            unknown = sorted(set(entry.params) - accepted)
            if unknown:
                raise _fail(entry, f"unknown parameter(s) {unknown}; {_callable_name(method.func)} accepts {sorted(accepted - set(SUPPLIED))}")
        params = {**method.defaults, **entry.params}
        for name, allowed in _choices().items():
            value = params.get(name)
            if isinstance(value, str) and value not in allowed:
                raise _fail(entry, f"{name}={value!r} is not supported; expected one of {sorted(allowed)}")
        out.append(ResolvedMethod(entry, method, params))
    return tuple(out)


def _zoo_names() -> list[str]:
    from .. import zoo

    names = []
    for item in zoo.list():
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, Mapping):
            names.append(str(item.get("name")))
        elif isinstance(item, tuple):
            names.append(str(item[0]))
        else:
            names.append(str(getattr(item, "name", item)))
    return names


def _check_models(config: SweepConfig) -> None:
    zoo_names: list[str] | None = None
    for entry in config.models:
        if entry.zoo:
            if zoo_names is None:
                try:
                    zoo_names = _zoo_names()
                except Exception as exc:
                    raise _fail(entry, f"the model zoo (pdcr_lab.zoo) is not available: {exc}") from None
            if entry.zoo not in zoo_names:
                raise _fail(entry, f"unknown zoo model {entry.zoo!r}; zoo models: {sorted(set(zoo_names))}")
        else:
            try:
                _resolve_callable(entry.factory)  # type: ignore[arg-type]
            except (ImportError, ValueError, TypeError) as exc:
                raise _fail(entry, f"factory {entry.source()!r}: {exc}") from None


def _load_dataset(entry: DatasetEntry) -> Any:
    if entry.embedded:
        from .. import datasets

        known = datasets.list_datasets()
        if entry.embedded not in known:
            raise _fail(entry, f"unknown dataset {entry.embedded!r}; embedded datasets: {known}, or give a factory")
    try:
        data = entry.load()
    except ConfigError:
        raise
    except Exception as exc:
        raise _fail(entry, f"loading {entry.source()} failed: {type(exc).__name__}: {exc}") from None
    for attr in ("images", "masks", "ids"):
        if not callable(getattr(data, attr, None)):
            raise _fail(entry, f"{entry.source()} returned {type(data).__name__}, expected a SegmentationData")
    splits = tuple(getattr(data, "splits", ()))
    if entry.split not in splits:
        raise _fail(entry, f"split {entry.split!r} does not exist; splits: {list(splits)}")
    return data


def _select_images(entry: DatasetEntry, ids: list[str], rule: RoiRule) -> tuple[list[int], dict[str, list[tuple[int, int, int, int]]]]:
    from ..datasets import read_roi_list

    from_file: dict[str, list[tuple[int, int, int, int]]] = {}
    if rule.kind == "file":
        try:
            specs = read_roi_list(rule.file, roi=rule.size)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            raise _fail(entry, f"RoI file: {exc}") from None
        for spec in specs:
            if spec.image_id not in ids:
                raise _fail(entry, f"RoI file {rule.file!r} names image {spec.image_id!r}, which is not in split {entry.split!r}")
            from_file.setdefault(spec.image_id, []).append(spec.box)
        return [ids.index(i) for i in from_file], from_file
    sel = entry.images
    if sel == "all":
        chosen = list(range(len(ids)))
    elif isinstance(sel, int):
        if sel > len(ids):
            raise _fail(entry, f"images={sel} but split {entry.split!r} has {len(ids)} images")
        chosen = list(range(sel))
    else:
        chosen = []
        for item in sel:
            if isinstance(item, str):
                if item not in ids:
                    raise _fail(entry, f"image {item!r} is not in split {entry.split!r} (ids like {ids[:3]})")
                chosen.append(ids.index(item))
            else:
                if not -len(ids) <= item < len(ids):
                    raise _fail(entry, f"image index {item} is out of range for split {entry.split!r} of {len(ids)} images")
                chosen.append(item % len(ids))
    if len(set(chosen)) != len(chosen):
        raise _fail(entry, "the image selection names an image twice")
    if not chosen:
        raise _fail(entry, f"no images selected from split {entry.split!r}")
    return chosen, from_file


def _check_box(entry: DatasetEntry, image_id: str, box: tuple[int, int, int, int], shape: tuple[int, int], block: int) -> None:
    h, w = shape
    r, c, bh, bw = box
    if r < 0 or c < 0 or r + bh > h or c + bw > w:
        raise _fail(entry, f"RoI {list(box)} (row, col, height, width) of image {image_id!r} lies outside the {h}x{w} image")
    rows = range(r // block, (r + bh - 1) // block + 1)
    cols = range(c // block, (c + bw - 1) // block + 1)
    if len(rows) * len(cols) >= (h // block) * (w // block):
        raise _fail(entry, f"RoI {list(box)} of image {image_id!r} covers every {block}x{block} block: nothing is left to intervene on")


def _probe(model_entry: ModelEntry, dataset_entry: DatasetEntry, image: Any, methods: Sequence[ResolvedMethod]) -> None:
    """Load the model and run it once on one image, so a broken pair fails before the sweep."""
    import torch

    from ..adapters import ModelAdapter

    where = f"{model_entry.describe()} on {dataset_entry.describe()}"
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


def resolve(config: SweepConfig) -> Plan:
    """Check `config` against the models and the data and compute the sweep's :class:`Plan`.

    Loads every dataset (and, with ``probe: true``, every model once on one image of each dataset)
    in this process; no cluster is involved. Raises :class:`ConfigError` naming the offending entry.
    """
    from ..rois import boundary_roi

    methods = _resolve_methods(config)
    _check_models(config)
    shape: tuple[int, int] | None = None
    block = config.block
    per_dataset = []
    bank_ids: list[str] = []
    bank_provenance: dict[str, Any] = {}
    for entry in config.datasets:
        data = _load_dataset(entry)
        images, masks, ids = data.images(entry.split), data.masks(entry.split), data.ids(entry.split)
        this_shape = (int(images.shape[-2]), int(images.shape[-1]))
        if shape is None:
            shape = this_shape
        elif this_shape != shape:
            raise _fail(entry, f"images are {this_shape[0]}x{this_shape[1]} but {config.datasets[0].describe()} has {shape[0]}x{shape[1]}; one store holds one block grid, run a sweep per size")
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
            raise _fail(entry, "has no patch bank to take the block size from; set `block` at the top level")
        if bank_block is not None and bank_block != block:
            raise _fail(entry, f"its patch bank holds {bank_block}x{bank_block} blocks but the sweep uses block={block}")
        if shape[0] % block or shape[1] % block:
            raise _fail(entry, f"block={block} does not tile the {shape[0]}x{shape[1]} images")
        rule = entry.rois or config.rois
        chosen, from_file = _select_images(entry, ids, rule)
        rows = []
        for index in chosen:
            image_id = ids[index]
            if rule.kind == "boxes":
                boxes = list(rule.boxes)
            elif rule.kind == "file":
                boxes = from_file[image_id]
            else:
                try:
                    boxes = [boundary_roi(masks[index], size=rule.size, block=block)]
                except ValueError as exc:
                    raise _fail(entry, f"automatic RoI of image {image_id!r}: {exc}") from None
            for box in boxes:
                _check_box(entry, image_id, box, shape, block)
            digest = hashlib.sha1(np.ascontiguousarray(images[index].numpy()).tobytes()).hexdigest()
            rows.append((image_id, index, digest, boxes))
        per_dataset.append(rows)
        if config.probe:
            for model in config.models:
                _probe(model, entry, images[chosen[0]], methods)
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
