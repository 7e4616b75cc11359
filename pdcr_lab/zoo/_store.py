"""Checkpoints, the manifest, and the public verbs of :mod:`pdcr_lab.zoo`.

The manifest (``manifest.json`` in the zoo folder) is checked when it is read: a file that is not
JSON, or entries without a ``file`` and a ``sha256``, raise a :class:`ManifestError` that names the
manifest (and the line and column of a JSON error). A checkpoint's ``file`` must lie inside the zoo
folder: relative, without ``..``, and not a link that leads out of it. Before a checkpoint's
architecture is built, its recipe is bounded (:func:`check_recipe_size`): every integer build option
(channels, widths, depths, heads, window and patch sides) at most :data:`MAX_RECIPE_INTEGER`, every
list of them at most :data:`MAX_RECIPE_LENGTH` long, and the parameters, counted on PyTorch's
``meta`` device (no memory is allocated), at most :data:`MAX_PARAMETERS`. The zoo's own models have
under a million parameters; the limits only stop damaged or hostile files from allocating the memory
of the machine. Images are not part of a recipe: a zoo model takes any H x W divisible by 32, a
3-D (volume) model any D x H x W divisible by 16.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import io
import json
import math
import os
import pickle
import platform
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from ..atomic import write_bytes, write_text
from ._base import ZooModel
from ._registry import ALL_DATASETS, DATASETS, DATASETS_3D, RECIPES, Recipe
from ._training import SegmentationSplits, evaluate, fit, num_threads, throughput

#: Environment variable that points the zoo to another checkpoint folder.
ZOO_ENV = "PDCR_LAB_ZOO"
MANIFEST = "manifest.json"
#: How many test images have their Dice recorded (the checkpoint test recomputes them).
N_RECORDED = 4


#: Largest integer build option of a recipe a checkpoint may ask for (channels, widths, depths, ...).
MAX_RECIPE_INTEGER = 1024
#: Longest list of build options (channels per level, depths per stage, ...).
MAX_RECIPE_LENGTH = 16
#: Most parameters (and buffer elements) of a zoo architecture: 20 M, 80 MB in float32.
MAX_PARAMETERS = 20_000_000


class ChecksumError(ValueError):
    """A checkpoint file does not match the sha256 recorded in the manifest."""


class ManifestError(ValueError):
    """The zoo's manifest is unreadable or malformed, or a checkpoint it lists is refused; the message names it."""


#: Images an epoch shows at least when training on a user's folder (the embedded training splits' size).
FOLDER_EPOCH_IMAGES = 320

#: Where :func:`train` writes when no folder is given: a user folder, never the shipped zoo.
USER_ZOO = Path("outputs") / "zoo"


def shipped_zoo() -> Path:
    """The zoo folder that ships with the checkout (``data/zoo``)."""
    return Path(__file__).resolve().parents[2] / "data" / "zoo"


def output_dir(out_dir: str | os.PathLike[str] | None, *, into_shipped: bool = False) -> Path:
    """Where :func:`train` writes: `out_dir`, else :data:`USER_ZOO`; the shipped zoo only when asked.

    Parameters
    ----------
    out_dir : path, optional
        The folder for ``<dataset>/<name>.pt`` and ``manifest.json``.
    into_shipped : bool
        Allow `out_dir` to be the shipped zoo (``data/zoo``), e.g. to rebuild it.

    Examples
    --------
    >>> output_dir(None).as_posix()
    'outputs/zoo'
    >>> output_dir(shipped_zoo())
    Traceback (most recent call last):
    ...
    ValueError: out_dir=... is the shipped zoo; a training run would overwrite its checkpoints. ...
    """
    folder = USER_ZOO if out_dir is None else Path(out_dir)
    if not into_shipped and folder.resolve() == shipped_zoo().resolve():
        raise ValueError(f"out_dir={str(folder)!r} is the shipped zoo; a training run would overwrite its checkpoints. "
                         "Write elsewhere (--out DIR), or pass into_shipped=True (--into-shipped-zoo) to rebuild it")
    return folder


def zoo_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The checkpoint folder: ``root``, else ``$PDCR_LAB_ZOO``, else ``data/zoo`` of the checkout.

    Parameters
    ----------
    root : path, optional
        An explicit folder (returned as a Path).

    Examples
    --------
    >>> zoo_dir("my_zoo").name, zoo_dir().name      # an explicit folder, else the shipped data/zoo
    ('my_zoo', 'zoo')
    """
    if root is not None:
        return Path(root)
    if os.environ.get(ZOO_ENV):
        return Path(os.environ[ZOO_ENV])
    return shipped_zoo()


def recipe(name: str) -> Recipe:
    """The :class:`Recipe` of an architecture; a ``ValueError`` listing the known names otherwise.

    Parameters
    ----------
    name : str
        Architecture name, one of :func:`list_models`.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown zoo model name={name!r}; known models: {builtins.list(RECIPES)}")
    return RECIPES[name]


def check_dataset(dataset: str, name: str | None = None) -> str:
    """`dataset` if the zoo is trained on it (and trains architecture `name` on it), else a
    ``ValueError`` that says which datasets and models exist.

    Parameters
    ----------
    dataset : str
        A dataset name, one of :data:`DATASETS` (2-D) or :data:`DATASETS_3D`.
    name : str, optional
        An architecture; a 2-D one trains on the 2-D datasets only, a 3-D one on the 3-D ones.

    Examples
    --------
    >>> check_dataset("brain3d", "unet3d")
    'brain3d'
    >>> check_dataset("brain3d", "unet")
    Traceback (most recent call last):
    ...
    ValueError: zoo model 'unet' is a 2-D architecture, trained on ['lesions', 'vessels', 'brain', 'cues', 'cues_global', 'cues_sequential'], not on the 3-D dataset 'brain3d'; the 3-D models are ['unet3d', 'segresnet3d']
    """
    if not isinstance(dataset, str) or dataset not in ALL_DATASETS:
        raise ValueError(f"unknown zoo dataset={dataset!r}; the zoo is trained on: {builtins.list(DATASETS)} (2-D) "
                         f"and {builtins.list(DATASETS_3D)} (3-D)")
    r = None if name is None else recipe(name)
    if r is not None and dataset not in r.datasets:
        dims = 5 - r.spatial_dims  # the other one: 2 <-> 3
        raise ValueError(f"zoo model {name!r} is a {r.spatial_dims}-D architecture, trained on {builtins.list(r.datasets)}, "
                         f"not on the {dims}-D dataset {dataset!r}; the {dims}-D models are {list_models(dims)}")
    return dataset


def list_models(spatial_dims: int | None = 2) -> builtins.list[str]:
    """Names of the registered architectures, in registry order.

    Parameters
    ----------
    spatial_dims : {2, 3, None}
        2 (default): the image models, which every 2-D caller iterates over; 3: the volume models;
        None: all of them.

    Examples
    --------
    >>> list_models(3)
    ['unet3d', 'segresnet3d']
    >>> len(list_models(None)) == len(list_models()) + len(list_models(3))
    True
    """
    if spatial_dims not in (2, 3, None):
        raise ValueError(f"spatial_dims={spatial_dims!r} is not valid; expected 2, 3 or None (all)")
    return [n for n, r in RECIPES.items() if spatial_dims in (None, r.spatial_dims)]


def trained(dataset: str, *, root: str | os.PathLike[str] | None = None) -> builtins.list[str]:
    """Architectures with a trained checkpoint for `dataset` in the zoo at `root`, in registry order.

    Parameters
    ----------
    dataset : str
        An embedded dataset name (``"lesions"``, ``"vessels"``, or the 3-D ``"brain3d"``, ``"vessels3d"``).
    root : path, optional
        The zoo folder (default: the shipped zoo, or ``$PDCR_LAB_ZOO``).

    Examples
    --------
    >>> from pdcr_lab import zoo
    >>> "unet" in zoo.trained("lesions"), "unet3d" in zoo.trained("brain3d")
    (True, True)
    """
    dataset = check_dataset(dataset)
    models = read_manifest(root)["models"]
    return [name for name in list_models(None) if f"{dataset}/{name}" in models]


def info(name: str) -> dict[str, Any]:
    """Family, paper, inductive bias, spatial dimensions, datasets, build options and training recipe
    of one architecture.

    Parameters
    ----------
    name : str
        Architecture name, one of :func:`list_models`.

    Examples
    --------
    >>> facts = info("segnet")
    >>> facts["family"], facts["kwargs"], facts["training"]["vessels"]["epochs"]
    ('cnn', {'channels': [8, 16, 32, 64]}, 20)
    """
    r = recipe(name)
    return {"name": name, "family": r.family, "paper": r.paper, "bias": r.bias,
            "spatial_dims": r.spatial_dims, "datasets": builtins.list(r.datasets),
            "kwargs": r.as_dict(r.datasets[0])["kwargs"],
            "training": {d: dataclasses.asdict(r.training_for(d)) for d in r.datasets}}


def build(name: str, **kwargs: Any) -> ZooModel:
    """An untrained :class:`ZooModel` (``kwargs`` override the recipe's build options).

    Parameters
    ----------
    name : str
        Architecture name, one of :func:`list_models`.
    **kwargs
        Build options that replace the recipe's (e.g. ``channels=(4, 8, 16, 32)``).

    Examples
    --------
    >>> model = build("segnet", channels=(4, 8, 16, 32))
    >>> model.name, tuple(model(torch.rand(1, 3, 32, 32)).shape)
    ('segnet', (1, 1, 32, 32))
    """
    r = recipe(name)
    options = dict(r.kwargs) | kwargs
    return ZooModel(r.builder(**options), name=name, channels=int(options.get("in_channels", 3)))


def read_manifest(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The zoo's ``manifest.json`` (an empty manifest when the folder has none).

    Parameters
    ----------
    root : path, optional
        The zoo folder (see :func:`zoo_dir`).

    Examples
    --------
    >>> entry = read_manifest()["models"]["lesions/segnet"]
    >>> entry["file"], len(entry["sha256"])
    ('lesions/segnet.pt', 64)
    """
    path = zoo_dir(root) / MANIFEST
    if not path.exists():
        return {"format": 1, "models": {}}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"zoo manifest {str(path)!r} cannot be read: {exc}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"zoo manifest {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                            f"column {exc.colno}") from None
    _check_manifest(manifest, path)
    return manifest


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_manifest(manifest: Any, path: Path) -> None:
    """The structure every reader relies on: ``{"models": {"<dataset>/<name>": {"file", "sha256", ...}}}``."""
    where = f"zoo manifest {str(path)!r}"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise ManifestError(f"{where} must be a JSON object with a 'models' object, got "
                            f"{type(manifest).__name__}{' without models' if isinstance(manifest, dict) else ''}")
    for key, entry in manifest["models"].items():
        if not isinstance(key, str) or key.count("/") != 1:
            raise ManifestError(f"{where}: model key {key!r} is not '<dataset>/<name>'")
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: models[{key!r}] must be an object, got {type(entry).__name__}")
        if not isinstance(entry.get("file"), str) or not entry["file"]:
            raise ManifestError(f"{where}: models[{key!r}].file must be a non-empty path, got {entry.get('file')!r}")
        if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            raise ManifestError(f"{where}: models[{key!r}].sha256 must be 64 lower-case hex digits, "
                                f"got {entry.get('sha256')!r}")


def checkpoint_path(folder: str | os.PathLike[str], key: str, file: str) -> Path:
    """The checkpoint `file` of manifest entry `key`, refused unless it lies inside the zoo `folder`.

    Parameters
    ----------
    folder : path
        The zoo folder (where the manifest is).
    key : str
        The manifest entry (``"<dataset>/<name>"``), for messages.
    file : str
        The entry's ``file``: a relative path inside `folder`, without ``..``.

    Examples
    --------
    >>> checkpoint_path("zoo", "lesions/unet", "lesions/unet.pt").as_posix()
    'zoo/lesions/unet.pt'
    >>> checkpoint_path("zoo", "lesions/unet", "../secrets.pt")
    Traceback (most recent call last):
    ...
    pdcr_lab.zoo._store.ManifestError: zoo manifest 'zoo/manifest.json': models['lesions/unet'].file='../secrets.pt' ...
    """
    folder = Path(folder)
    where = f"zoo manifest {str(folder / MANIFEST)!r}: models[{key!r}].file={file!r}"
    if PurePosixPath(file).is_absolute() or PureWindowsPath(file).is_absolute() or PureWindowsPath(file).drive:
        raise ManifestError(f"{where} is an absolute path; checkpoints are given relative to the zoo folder")
    if ".." in PurePosixPath(file.replace("\\", "/")).parts:
        raise ManifestError(f"{where} climbs out of the zoo folder with '..'; checkpoints must lie inside it")
    path = folder / file
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise ManifestError(f"{where} leads to {str(path.resolve())!r}, outside the zoo folder {str(root)!r} "
                            "(a link out of it?); checkpoints must lie inside it")
    return path


def _elements(model: Any) -> int:
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def check_recipe_size(name: str, kwargs: Mapping[str, Any], *, source: str = "recipe") -> int:
    """Bound the build options of architecture `name` before it is built; return its parameter count.

    Every integer option (alone or in a list) must be at most :data:`MAX_RECIPE_INTEGER`, every
    list at most :data:`MAX_RECIPE_LENGTH` long; then the architecture is built on PyTorch's
    ``meta`` device (shapes only, no memory) and its parameters and buffer elements must number at
    most :data:`MAX_PARAMETERS`.

    Parameters
    ----------
    name : str
        Architecture name, one of :func:`list_models`.
    kwargs : mapping
        Build options (a checkpoint's ``recipe["kwargs"]``).
    source : str
        Where the options come from, for messages (e.g. the checkpoint file).

    Examples
    --------
    >>> check_recipe_size("segnet", {"channels": [8, 16, 32, 64]})
    186547
    >>> check_recipe_size("segnet", {"channels": [65536, 16, 32, 64]})
    Traceback (most recent call last):
    ...
    ValueError: recipe: build option channels=[65536, 16, 32, 64] of 'segnet' holds 65536; ...
    """
    r = recipe(name)
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{source}: the build options of {name!r} must be a mapping, got {type(kwargs).__name__}")
    for key, value in kwargs.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(items) > MAX_RECIPE_LENGTH:
            raise ValueError(f"{source}: build option {key}= of {name!r} has {len(items)} entries; at most "
                             f"{MAX_RECIPE_LENGTH} are allowed (MAX_RECIPE_LENGTH)")
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{source}: build option {key}={value!r} of {name!r} is not finite")
            if isinstance(item, (list, tuple, dict)) or (isinstance(item, int) and abs(item) > MAX_RECIPE_INTEGER):
                raise ValueError(f"{source}: build option {key}={value!r} of {name!r} holds {item!r}; integer build "
                                 f"options are at most {MAX_RECIPE_INTEGER} (MAX_RECIPE_INTEGER)")
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            count = _elements(r.builder(**dict(kwargs)))
    except Exception as exc:  # noqa: BLE001 - a builder refuses bad options in its own ways
        raise ValueError(f"{source}: {name!r} cannot be built from options {dict(kwargs)}: {type(exc).__name__}: {exc}") from None
    if count > MAX_PARAMETERS:
        raise ValueError(f"{source}: {name!r} built from options {dict(kwargs)} has {count:,} parameters; at most "
                         f"{MAX_PARAMETERS:,} are allowed (MAX_PARAMETERS)")
    return count


def _write_manifest(manifest: dict[str, Any], root: Path) -> None:
    manifest["models"] = dict(sorted(manifest["models"].items()))
    write_text(root / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def sha256(path: Path) -> str:
    """Hex SHA-256 digest of a file's bytes.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    """
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(name: str, dataset: str, *, root: str | os.PathLike[str] | None = None) -> tuple[ZooModel, dict[str, Any]]:
    """A trained zoo model in eval mode, and its metadata.

    Parameters
    ----------
    name : str
        Architecture name, one of :func:`list`.
    dataset : str
        The dataset it was trained on: ``"lesions"`` or ``"vessels"`` in the shipped zoo
        (``"brain3d"`` or ``"vessels3d"`` for a 3-D model), any name a :func:`train` run used in
        another zoo folder.
    root : path, optional
        Checkpoint folder (default: ``$PDCR_LAB_ZOO`` or the repository's ``data/zoo``).

    Returns
    -------
    model : ZooModel
        (B, C, H, W) image in [0, 1] -> (B, 1, H, W) foreground probability; H, W divisible by 32
        (a 3-D model: (B, C, D, H, W) -> (B, 1, D, H, W), sides divisible by 16).
    metadata : dict
        Family, paper, parameter count, recipe, seed, epochs, validation and test Dice, test IoU,
        per-image test Dice of the first 4 test images, sha256, throughput (images/s), and for
        models trained on a folder the data's provenance and normalisation (``data``).

    Examples
    --------
    >>> model, meta = load("segnet", "lesions")
    >>> meta["family"], meta["dataset"], meta["test_dice"] > 0.5, model.training
    ('cnn', 'lesions', True, False)

    Raises
    ------
    ValueError
        Unknown name or dataset (the message lists the known ones), or a 2-D model asked for on a
        3-D dataset and vice versa.
    FileNotFoundError
        No checkpoint for this pair in the manifest, or the file is missing.
    ChecksumError
        The file's sha256 differs from the manifest's.
    ManifestError
        The manifest is not valid, or the entry's file lies outside the zoo folder.
    """
    recipe(name)
    folder = zoo_dir(root)
    key = f"{dataset}/{name}"
    models = read_manifest(folder)["models"]
    entry = models.get(key)
    if entry is None:
        known = sorted({k.split("/")[0] for k in models})
        if dataset in ALL_DATASETS:  # a 2-D model asked for on a 3-D dataset (or back) says so in any folder
            check_dataset(dataset, name)
        if folder.resolve() == shipped_zoo().resolve() or not known:
            check_dataset(dataset)
        elif dataset not in known:
            raise ValueError(f"unknown dataset={dataset!r} in the zoo folder {str(folder)!r}; its checkpoints are "
                             f"trained on: {known}")
        raise FileNotFoundError(f"no checkpoint for {name!r} on {dataset!r} in {folder / MANIFEST}; "
                                f"train it with `pdcr-lab zoo train {name} --dataset {dataset}`")
    path = checkpoint_path(folder, key, entry["file"])
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} listed in the manifest {folder / MANIFEST} is missing")
    digest = _verified(path, entry["sha256"], f"`pdcr-lab zoo train {name} --dataset {dataset}`")
    model, metadata = _restore(path, name)
    return model, metadata | {"sha256": digest, "images_per_s": entry.get("images_per_s")}


def _verified(path: Path, recorded: str, retrain: str) -> str:
    digest = sha256(path)
    if digest != recorded:
        raise ChecksumError(f"checksum mismatch for {path}: the manifest records sha256 {recorded}, "
                            f"the file has {digest}; the file is damaged or was replaced; restore it or retrain "
                            f"with {retrain}")
    return digest


def _restore(path: Path, name: str | None = None) -> tuple[ZooModel, dict[str, Any]]:
    """The model and metadata of a checkpoint written by :func:`train` (recipe bounded before building)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises pickle, zip and runtime errors alike
        if isinstance(exc, pickle.UnpicklingError):
            why = ("it holds pickled objects (e.g. a whole module saved with torch.save(model)), which are not "
                   "loaded: unpickling can run code")
        else:
            why = re.sub(r"\x1b\[[0-9;]*m", "", str(exc).splitlines()[0] if str(exc) else "")
        raise ValueError(f"checkpoint {str(path)!r} cannot be read as a pdcr_lab zoo checkpoint: "
                         f"{type(exc).__name__}: {why}") from None
    try:
        kwargs, state, metadata = ckpt["recipe"]["kwargs"], ckpt["state_dict"], ckpt["metadata"]
        arch = ckpt["recipe"].get("name", name)
    except (KeyError, TypeError, AttributeError):
        arch = None
    if arch is None:
        raise ValueError(f"checkpoint {str(path)!r} has no recipe (name, kwargs) or state_dict; it was not written by "
                         "pdcr_lab.zoo.train")
    if name is not None and arch != name:
        raise ValueError(f"checkpoint {str(path)!r} holds architecture {arch!r}, not {name!r}")
    r = recipe(arch)
    check_recipe_size(arch, kwargs, source=f"checkpoint {str(path)!r}")  # before anything is allocated
    model = ZooModel(r.builder(**kwargs), name=arch, channels=int(kwargs.get("in_channels", 3)))
    model.load_state_dict(_float(state))
    model.eval()
    return model, metadata


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[ZooModel, dict[str, Any]]:
    """A model from a checkpoint file written by :func:`train`, wherever it lies.

    When the file is listed in a ``manifest.json`` of its zoo folder (the folder :func:`train`
    wrote), its sha256 is checked against it (``metadata["verified"]`` says so).

    Parameters
    ----------
    path : path
        The ``.pt`` file (``<out>/<dataset>/<name>.pt``).

    Returns
    -------
    model : ZooModel
        In eval mode, taking the channel count it was trained on.
    metadata : dict
        As :func:`load`, plus ``file`` and ``verified``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    folder = path.resolve().parent.parent
    listed = [e for e in read_manifest(folder)["models"].values() if (folder / e["file"]).resolve() == path.resolve()]
    digest = _verified(path, listed[0]["sha256"], "the training run") if listed else sha256(path)
    model, metadata = _restore(path)
    return model, metadata | {"sha256": digest, "file": str(path), "verified": bool(listed)}


def _save(model: ZooModel, recipe_dict: dict[str, Any], dataset: str, metadata: dict[str, Any],
          folder: Path) -> tuple[Path, str]:
    path = folder / dataset / f"{recipe_dict['name']}.pt"
    buffer = io.BytesIO()
    torch.save({"state_dict": _half(model.state_dict()), "recipe": recipe_dict, "metadata": metadata}, buffer)
    write_bytes(path, buffer.getvalue())
    return path, hashlib.sha256(buffer.getvalue()).hexdigest()


_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _jsonable(value: Any) -> Any:
    """`value` with paths and tuples made JSON types (data provenance goes into the checkpoint)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def train(name: str, dataset: str, *, seed: int = 0, epochs: int | None = None,
          out_dir: str | os.PathLike[str] | None = None, progress: bool = True, threads: int = 1,
          data: SegmentationSplits | None = None, save: bool = True, into_shipped: bool = False) -> dict[str, Any]:
    """Train one zoo architecture from its recipe and seed; save the checkpoint and update the manifest.

    Parameters
    ----------
    name : str
        Architecture (see :func:`list`).
    dataset : str
        ``"lesions"`` or ``"vessels"`` (``"brain3d"`` or ``"vessels3d"`` for a 3-D architecture),
        loaded here, or the name under which `data` is stored.
    seed : int
        Seeds the initialisation (``torch.manual_seed``), the data order and the flips.
    epochs : int, optional
        Maximum epochs (default: the recipe's).
    out_dir : path, optional
        Where ``<dataset>/<name>.pt`` and ``manifest.json`` go (default: ``outputs/zoo``). The
        shipped zoo is refused unless `into_shipped` (see :func:`output_dir`).
    progress : bool
        Show a tqdm progress bar.
    threads : int
        ``torch.set_num_threads`` during training (restored afterwards).
    data : object with ``images(split)`` and ``masks(split)``, optional
        Train on these splits (``train``, ``val``; ``test`` is scored when it has images) instead
        of ``pdcr_lab.datasets.load(dataset)``; any channel count; (N, C, D, H, W) volumes for a
        3-D architecture. Its ``info`` (provenance, normalisation) is stored in the checkpoint's
        metadata as ``data``.
    save : bool
        Write the checkpoint and manifest entry.
    into_shipped : bool
        Allow `out_dir` to be the shipped zoo (rebuilding it).

    Returns
    -------
    dict
        The metadata stored with the checkpoint, plus ``file`` and ``sha256`` when saved, or the
        trained ``model`` when ``save=False``.

    Notes
    -----
    Early stopping and model selection use the validation split only. The weights are stored in
    float16; the recorded scores are computed after that rounding, so they are what :func:`load`
    gives back. The recipe records ``in_channels``. ``images_per_s`` in the manifest counts
    volumes for a 3-D architecture.
    """
    r = recipe(name)
    if data is None:
        from pdcr_lab import datasets

        data = datasets.load(check_dataset(dataset, name))
    elif not isinstance(dataset, str) or not _DATASET_NAME.fullmatch(dataset):
        raise ValueError(f"dataset={dataset!r} names the checkpoint's folder: letters, digits, '_', '.', '-'")
    elif dataset in ALL_DATASETS:
        check_dataset(dataset, name)  # an embedded name must not label the other kind of model
    folder = output_dir(out_dir, into_shipped=into_shipped) if save else None
    training = r.training_for(dataset)
    if dataset not in ALL_DATASETS and not training.min_epoch_images:  # own data: as many steps as the embedded sets
        training = dataclasses.replace(training, min_epoch_images=FOLDER_EPOCH_IMAGES)
    if epochs is not None:
        training = dataclasses.replace(training, epochs=epochs)
    train_images = data.images("train").float()
    if train_images.ndim != 2 + r.spatial_dims:
        kind = "(N, C, D, H, W) volumes" if r.spatial_dims == 3 else "(N, C, H, W) images"
        raise ValueError(f"{name!r} is a {r.spatial_dims}-D architecture: it trains on {kind}, but the training split "
                         f"of {dataset!r} has shape {tuple(train_images.shape)}")
    channels = int(train_images.shape[1])
    kwargs = dict(r.kwargs) | {"in_channels": channels}
    recipe_dict = r.as_dict(dataset) | {"in_channels": channels}
    if channels != r.kwargs.get("in_channels", 3):  # the recipe's own channels stay as the registry has them
        recipe_dict["kwargs"]["in_channels"] = channels
    with num_threads(threads):
        torch.manual_seed(seed)
        axes = (0, *range(2, train_images.ndim))  # per channel, over images (volumes) and space
        std = train_images.std(axes).clamp(min=1e-3)  # a constant channel must not divide by zero
        model = ZooModel(r.builder(**kwargs), name=name, mean=train_images.mean(axes).tolist(), std=std.tolist())
        history = fit(model, data, training, seed=seed, progress=progress, desc=f"{name}/{dataset}")
        model.load_state_dict(_float(_half(model.state_dict())))  # score what is stored
        val = evaluate(model, data.images("val"), data.masks("val"))
        test_images = data.images("test")
        test = evaluate(model, test_images, data.masks("test")) if len(test_images) else None
    metadata = {
        "name": name, "dataset": dataset, "family": r.family, "paper": r.paper, "bias": r.bias,
        "params": sum(p.numel() for p in model.parameters()), "in_channels": channels,
        "image_size": list(train_images.shape[2:]),
        "recipe": recipe_dict | {"training": dataclasses.asdict(training)},
        "seed": seed, "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
        "val_dice": val["dice"], "test_dice": test["dice"] if test else None, "test_iou": test["iou"] if test else None,
        "test_dice_first": test["per_image_dice"][:N_RECORDED] if test else [],
        "train_seconds": round(history["train_seconds"], 1), "threads": threads,
        "torch": str(torch.__version__), "platform": platform.machine(),
        "history": [{k: round(v, 4) for k, v in h.items()} for h in history["history"]],
        "data": _jsonable(getattr(data, "info", None) or {"name": dataset}),
    }
    if folder is None:
        return metadata | {"model": model}
    path, digest = _save(model, recipe_dict, dataset, metadata, folder)
    manifest = read_manifest(folder)
    manifest["models"][f"{dataset}/{name}"] = {
        "file": path.relative_to(folder).as_posix(), "sha256": digest, "bytes": path.stat().st_size,
        "params": metadata["params"], "family": r.family, "paper": r.paper, "in_channels": channels,
        "test_dice": round(test["dice"], 4) if test else None, "test_iou": round(test["iou"], 4) if test else None,
        "test_dice_first": metadata["test_dice_first"], "val_dice": round(val["dice"], 4),
        "epochs_run": metadata["epochs_run"], "train_seconds": metadata["train_seconds"], "seed": seed,
        "images_per_s": round(throughput(model, size=min(int(train_images.shape[-1]), 96)), 1),
    }
    _write_manifest(manifest, folder)
    return metadata | {"file": str(path), "sha256": digest}


def benchmark(names: builtins.list[str] | None = None, datasets: builtins.list[str] | None = None, *,
              root: str | os.PathLike[str] | None = None, threads: int = 2, batch: int = 32,
              update: bool = True) -> dict[str, float]:
    """Re-measure the forward throughput (images/s at ``batch`` x C x 96 x 96, ``threads`` CPU threads;
    volumes/s at ``batch`` x C x 32 x 32 x 32 for 3-D models) of the manifest's checkpoints and (by
    default) write it back to the manifest.

    Parameters
    ----------
    names : list of str, optional
        Architectures to measure (default: all in the manifest).
    datasets : list of str, optional
        Datasets to measure (default: all in the manifest).
    root : path, optional
        The zoo folder (see :func:`zoo_dir`).
    threads : int
        CPU threads during the measurement.
    batch : int
        Images per forward pass.
    update : bool
        Write the new throughputs into the manifest.

    Returns
    -------
    dict
        ``{"<dataset>/<name>": images per second}``.
    """
    folder = zoo_dir(root)
    manifest = read_manifest(folder)
    out = {}
    for key in builtins.list(manifest["models"]):
        dataset, name = key.split("/")
        if (names and name not in names) or (datasets and dataset not in datasets):
            continue
        model, _ = load(name, dataset, root=folder)
        out[key] = round(throughput(model, batch=batch, threads=threads), 1)
        manifest["models"][key]["images_per_s"] = out[key]
    if update:
        _write_manifest(manifest, folder)
    return out
