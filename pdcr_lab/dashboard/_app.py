"""The dashboard: a panel app to explain, compare, browse and export PdCR maps in a browser.

Choose a dataset, an image and one or more zoo models, click the image to place the RoI, press
*Explain*. The computation runs in a worker thread (:class:`pdcr_lab.widgets.ExplainRunner`) with a
progress bar, so the page never freezes; each model's result is saved to the results folder as soon
as it is computed (a later failure loses nothing) and drawn on one shared colour scale. The
*Stored results* tab opens any ``.nc`` file of the folder; *Export* writes the current figure as
PNG (matplotlib, :func:`pdcr_lab.viz.overlay_figure`) or as a self-contained HTML page.

Nothing is exposed and nothing outlives its page: the folders a visitor types are confined to the
results root the dashboard was started with (:func:`confine`), and a served page builds its
dashboard only once a browser has loaded it and releases it (:meth:`Dashboard.close`) when its
session ends.
"""

from __future__ import annotations

import functools
import html
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import param
import xarray as xr

from ..defaults import WORKING, Intervention, choices
from ..explainers import get_explainer, list_explainers
from ..schema import STACK_DIMS, stack
from ..viz import VIEW_WIDTH, composition, histogram, radial_profile, side_by_side, split_maps
from ..widgets import TONES, ExplainRunner, RoiPicker, readable_error, server_document, statistics_html, status_html
from ..zoo import DATASETS as ZOO_DATASETS
from ._store import ResultStore, confine

__all__ = ["Dashboard", "ModelSource", "zoo_source", "create_app", "DATASETS"]

#: The embedded datasets offered by default: the 2-D sets the zoo's models are trained on.
DATASETS = ZOO_DATASETS
SPLIT = "test"


@dataclass(frozen=True)
class ModelSource:
    """Where the dashboard gets models: ``names(dataset) -> list`` and ``load(name, dataset) -> model``.

    Parameters
    ----------
    names : callable(dataset) -> list of str
        The models offered for a dataset.
    load : callable(name, dataset) -> torch.nn.Module
        Loads one of them.

    Examples
    --------
    >>> source = ModelSource(lambda dataset: ["tiny"], lambda name, dataset: torch.nn.Conv2d(3, 1, 1))
    >>> source.names("lesions"), type(source.load("tiny", "lesions")).__name__
    (['tiny'], 'Conv2d')
    """

    names: Callable[[str], list[str]]
    load: Callable[[str, str], Any]


def _zoo_names(dataset: str) -> list[str]:
    """Zoo architectures with a trained checkpoint for `dataset`, in registry order."""
    from .. import zoo

    return zoo.trained(dataset)


def _zoo_load(name: str, dataset: str) -> Any:
    from .. import zoo

    model, _meta = zoo.load(name, dataset)
    return model


def zoo_source() -> ModelSource:
    """Models of :mod:`pdcr_lab.zoo` (the trained checkpoints of each dataset)."""
    return ModelSource(_zoo_names, _zoo_load)


@functools.lru_cache(maxsize=8)
def _dataset(name: str) -> Any:
    from .. import datasets

    return datasets.load(name)


def _split_stacked(ds: xr.Dataset, label: str) -> dict[str, xr.Dataset]:
    """label -> single map: one per entry of the first stack dim (first entry of any other)."""
    maps = split_maps(ds, first_of_others=True)
    dims = [d for d in ds.ate.dims if d in STACK_DIMS]
    return maps if not dims else {f"{label} [{dims[0]}={key}]": m for key, m in maps.items()}


class Dashboard(param.Parameterized):
    """The app's state and widgets; :meth:`view` lays them out.

    Parameters
    ----------
    results_dir : str or os.PathLike, optional
        The results root (created on the first save): results are stored in it or in folders inside
        it, and the *results folder* box accepts nothing outside it (:func:`confine`). Default:
        ``dashboard`` in :func:`pdcr_lab.locations.results_dir` (the user folder).
    fallback : str or os.PathLike, optional
        A read-only folder of stored results also looked up before computing (e.g. the maps the
        checkout ships, for a dashboard embedded in a notebook).
    models : ModelSource, optional
        Where models come from (default: the zoo).
    datasets : sequence of str
        Dataset names offered.
    fine, coarse : int
        Default draws (small defaults keep a CPU run under a minute).
    roi_size : int
        Side in pixels of the RoI a click places.
    **params
        Further ``param`` parameters (e.g. ``name``).
    """

    status = param.String(default="", doc="last message shown to the user")
    status_kind = param.Selector(default="info", objects=list(TONES), doc="its tone: danger, warning, info, success")

    def __init__(
        self,
        results_dir: str | os.PathLike | None = None,
        *,
        fallback: str | os.PathLike | None = None,
        models: ModelSource | None = None,
        datasets: Sequence[str] = DATASETS,
        fine: int = WORKING.fine,
        coarse: int = WORKING.coarse,
        roi_size: int = WORKING.roi_size,
        **params: Any,
    ) -> None:
        import panel as pn

        super().__init__(**params)
        self.source = models or zoo_source()
        if results_dir is None:
            from ..locations import results_dir as user_results

            results_dir = user_results() / "dashboard"
        self.root = Path(results_dir).expanduser().resolve()
        self.store = ResultStore(self.root, fallback=fallback)
        self._closed = False
        self.runner = ExplainRunner()
        self.current: dict[str, xr.Dataset] = {}  # label -> single map on show
        self.current_image: Any = None
        self._models_cache: dict[tuple[str, str], Any] = {}

        self.dataset = pn.widgets.Select(label="dataset", options=list(datasets), value=datasets[0], width=200)
        self.image_select = pn.widgets.Select(label="test image", options={}, width=200)
        self.models = pn.widgets.MultiChoice(label="models", options=[], width=420)
        self.intervention = pn.widgets.Select(label="intervention", options=list(choices(Intervention)), value="natural", width=130)
        self.method = pn.widgets.Select(label="method", options=[n for n in list_explainers() if get_explainer(n).on_grid],
                                        value="pdcr", width=130)
        self.seed = pn.widgets.IntInput(label="seed", value=0, start=0, width=130)
        self.fine = pn.widgets.IntInput(label="fine draws N", value=fine, start=1, width=130)
        self.coarse = pn.widgets.IntInput(label="coarse draws S", value=coarse, start=0, width=130)
        self.tau = pn.widgets.FloatInput(label="tau", value=0.02, start=0.0, step=0.01, width=130)
        self.run_button = pn.widgets.Button(label="Explain", color="primary", width=420)
        # A StaticText that stays visible (empty when there is nothing to say): in a notebook, toggling
        # `visible` or changing a pane's text resends links to panel's CDN stylesheets (offline: lost).
        self.message = pn.widgets.StaticText(value="", width=420, margin=(5, 10))

        self.picker = RoiPicker(np.zeros((96, 96)), size=roi_size, block=8)
        # linked_axes=False everywhere: panel would otherwise tie the ranges of unrelated plots.
        self.maps = pn.pane.HoloViews(None, linked_axes=False, css_classes=["pdcr-maps"])
        self.overlays = pn.pane.HoloViews(None, linked_axes=False)
        self.details = pn.Column()
        self.profiles = pn.pane.HoloViews(None, linked_axes=False)

        self.folder = pn.widgets.TextInput(label="results folder", value=str(self.root), width=400)
        self.folder_note = pn.pane.HTML(
            f"<small>Results are confined to the results root <code>{html.escape(str(self.root))}</code>: type a "
            "folder inside it (relative to it, or its full path); folders and links that lead outside it are "
            "refused.</small>", width=400)
        self.files = pn.widgets.Select(label="stored results", options=[], size=10, width=400)
        self.refresh_button = pn.widgets.Button(label="Refresh", width=100)
        self.open_button = pn.widgets.Button(label="Open", color="primary", width=100)

        self.export_choice = pn.widgets.Select(label="result to export", options=[], width=300)
        self.png_download = pn.widgets.FileDownload(callback=self._png_bytes, filename="pdcr_map.png", label="Download PNG", width=300)
        self.html_download = pn.widgets.FileDownload(callback=self._html_bytes, filename="pdcr_maps.html", label="Download HTML", width=300)

        self.dataset.param.watch(lambda e: self._load_dataset(e.new), "value")
        self.image_select.param.watch(lambda e: self._load_image(), "value")
        self.run_button.on_click(self.run)
        self.refresh_button.on_click(lambda e: self.refresh_files())
        self.open_button.on_click(lambda e: self.open_file(self.files.value))
        self.folder.param.watch(lambda e: self._set_folder(e.new), "value")
        self.export_choice.param.watch(lambda e: self._name_exports(), "value")
        self.runner.on_error(lambda label, text: self._after_run(f"{label} failed. {text}", failed=True))
        self._load_dataset(self.dataset.value)
        self.refresh_files()

    # -- inputs -------------------------------------------------------------------------------
    @property
    def data(self) -> Any:
        return _dataset(self.dataset.value)

    def _say(self, text: str, kind: str = "info") -> None:
        self.status, self.status_kind = text, kind
        self.message.value = status_html(text, kind)

    def _load_dataset(self, name: str) -> None:
        try:
            data = _dataset(name)
            names = self.source.names(name)
        except Exception as exc:  # noqa: BLE001 - an unavailable dataset or zoo must not break the page
            self._say(readable_error(exc), "danger")
            return
        ids = data.ids(SPLIT)
        self.image_select.options = {image_id: i for i, image_id in enumerate(ids)}
        self.image_select.value = 0
        self.picker.block = int(data.bank.block)
        kept = [m for m in self.models.value if m in names]
        self.models.options = list(names)
        self.models.value = kept or list(names[:1])
        if not names:
            self._say(f"no trained model is available for {name!r} yet", "warning")
        self._load_image()

    def _load_image(self) -> None:
        from ..rois import boundary_roi

        index = self.image_select.value or 0
        data = self.data
        image, mask = data.images(SPLIT)[index], data.masks(SPLIT)[index]
        self.current_image = image
        self.picker.set_image(image)
        try:
            self.picker.roi = boundary_roi(mask, size=self.picker.size, block=self.picker.block)
        except ValueError:  # empty mask: keep the centred RoI
            pass

    @property
    def image_id(self) -> str:
        """Name of the test image shown."""
        return self.data.ids(SPLIT)[self.image_select.value or 0]

    def settings(self) -> dict[str, Any]:
        """The estimator settings of the next run (also the stored file's name parts)."""
        return {
            "method": self.method.value,
            "intervention": self.intervention.value,
            "coarse": int(self.coarse.value),
            "fine": int(self.fine.value),
            "tau": float(self.tau.value),
            "seed": int(self.seed.value),
        }

    def model(self, name: str, dataset: str) -> Any:
        """Model `name` of `dataset` from the source, loaded once per page.

        Parameters
        ----------
        name : str
            A name the source offers.
        dataset : str
            The dataset it was trained on.
        """
        key = (name, dataset)
        if key not in self._models_cache:
            self._models_cache[key] = self.source.load(name, dataset)
        return self._models_cache[key]

    # -- running ------------------------------------------------------------------------------
    def run(self, event: Any = None) -> Any:
        """Start explaining the chosen models (returns the runner's Future, or None if refused).

        Parameters
        ----------
        event : object, optional
            The button's click event (unused; the method is the button's callback).
        """
        names = list(self.models.value)
        if not names:
            self._say("choose at least one model", "warning")
            return None
        if self.runner.running:
            self._say("a computation is already running; wait for it to finish", "warning")
            return None
        if self._folder() is None:  # the folder became a link out of the root since it was chosen
            return None
        dataset, index = self.dataset.value, self.image_select.value or 0
        roi = tuple(int(v) for v in self.picker.roi)
        # On a served page the button is disabled while it runs. Not in a notebook: panel there drops
        # a property change that returns to an earlier value within one cell, which would leave the
        # button disabled after `app.run(); app.runner.wait()`; the runner refuses a second run anyway.
        self.run_button.disabled = server_document() is not None
        self._say("")
        return self.runner.submit(self._job, names, dataset, index, roi, self.settings(), label=", ".join(names))

    def _job(self, names: list[str], dataset: str, index: int, roi: tuple[int, int, int, int], settings: dict[str, Any],
             progress: Callable[[int, int], None]) -> xr.Dataset | None:
        data = _dataset(dataset)
        image, target, image_id = data.images(SPLIT)[index], data.masks(SPLIT)[index], data.ids(SPLIT)[index]
        done: dict[str, xr.Dataset] = {}
        for i, name in enumerate(names):
            if self.runner.closed:  # the page was closed: the remaining models are not explained
                return None
            self.runner.message = f"{name} ({i + 1}/{len(names)}): computing ..."

            def step(n: int, total: int, i: int = i) -> None:
                progress(1000 * i + (1000 * n) // max(total, 1), 1000 * len(names))

            done[name] = self.store.explain(self.model(name, dataset), image, name=name, dataset=dataset, image_id=image_id,
                                            roi=roi, target=target, bank=data.bank, progress=step, **settings)
            # Show (and keep) every model's map as soon as it exists: a later failure loses nothing.
            self.runner.in_ui(self.show, dict(done), image)
        # The folder's full path is in "Stored results"; its name is enough here (and fits the box).
        self.runner.in_ui(self._after_run, f"saved {len(done)} result(s) of {dataset} {image_id}, RoI {roi} "
                                           f"in the results folder {self.store.folder.name!r}")
        return stack(done, dim="model") if len(done) > 1 else next(iter(done.values()))

    def _after_run(self, text: str, failed: bool = False) -> None:
        self.run_button.disabled = False
        warning = self._outcome_warnings()
        if warning and not failed:
            self._say(f"{text}. {warning}", "warning")
        else:
            self._say(text, "danger" if failed else "success")
        self.refresh_files()

    def _outcome_warnings(self) -> str:
        """The warnings recorded with the maps shown (e.g. an RoI with nothing to segment), one line."""
        notes = {label: ds.attrs["outcome_warning"] for label, ds in self.current.items() if ds.attrs.get("outcome_warning")}
        if not notes:
            return ""
        first = next(iter(notes.values()))
        return f"Warning for {', '.join(notes)}: {first}"

    # -- showing ------------------------------------------------------------------------------
    def show(self, results: dict[str, xr.Dataset], image: Any = None) -> None:
        """Draw maps (one shared colour scale), overlays, statistics and profiles of `results`.

        Parameters
        ----------
        results : dict label -> xarray.Dataset
            Single maps of one image and RoI.
        image : array, optional
            The explained image (the overlays need it).
        """
        import panel as pn

        self.current, self.current_image = dict(results), image
        self.maps.object = side_by_side(results)
        self.overlays.object = side_by_side(results, image=image) if image is not None else None
        self.profiles.object = radial_profile(results, dim="model")
        rows = []
        for label, ds in results.items():
            table = statistics_html(ds, title=label)
            rows.append(pn.FlexBox(
                pn.pane.HTML(f'<div class="pdcr-result" data-model="{html.escape(label)}">{table}</div>', width=330),
                pn.pane.HoloViews(composition(ds), linked_axes=False),
                pn.pane.HoloViews(histogram(ds), linked_axes=False),
            ))
        self.details.objects = rows
        self.export_choice.options = list(results)
        self.export_choice.value = next(iter(results))
        self._name_exports()
        warning = self._outcome_warnings()
        if warning:
            self._say(warning, "warning")

    def _folder(self) -> Path | None:
        """The results folder, checked again (a link may have changed); None, with a message, when outside the root."""
        try:
            return confine(self.root, self.store.folder)
        except ValueError as exc:
            self._say(str(exc), "danger")
            return None

    def _inside(self, path: Path) -> bool:
        try:
            confine(self.root, path)
        except ValueError:
            return False
        return True

    def refresh_files(self) -> None:
        """List the folder's stored results again (newest first); files that link out of the root are left out."""
        if self._folder() is None:
            self.files.options = []
            return
        self.files.options = [p.name for p in self.store.files() if self._inside(p)]

    def _set_folder(self, folder: str) -> None:
        try:
            path = confine(self.root, folder)
        except ValueError as exc:
            # Refused: nothing of it is listed, opened or created; results keep going to the last folder.
            self.files.options = []
            self._say(f"{exc}. Results stay in {self.store.folder}.", "danger")
            return
        self.store = ResultStore(path)
        self.refresh_files()
        self._say(f"results folder: {path}", "info")

    def open_file(self, name: str | None) -> dict[str, xr.Dataset]:
        """Show a stored result; its image is found again from its ``dataset``/``image_id`` attrs.

        Parameters
        ----------
        name : str or None
            A stored file's name (None or empty: a message asks for one).

        Returns
        -------
        dict label -> xarray.Dataset
            The maps shown (empty when nothing could be opened; the message says why).
        """
        if not name:
            self._say("choose a stored result first", "warning")
            return {}
        if Path(name).name != name or self._folder() is None:
            self._say(f"could not open {name}: choose a file of the stored results list", "danger")
            return {}
        try:
            ds = self.store.load(confine(self.root, self.store.folder / name))
            results = _split_stacked(ds, str(ds.attrs.get("model", Path(name).stem)))
            image = None
            dataset, image_id = ds.attrs.get("dataset"), ds.attrs.get("image_id")
            if dataset and image_id:
                try:
                    data = _dataset(str(dataset))
                    split, i = data.index(str(image_id))
                    image = data.images(split)[i]
                except (KeyError, ValueError):
                    image = None
            self.show(results, image)
        except Exception as exc:  # noqa: BLE001 - a broken file gets a message, the page stays usable
            self._say(f"could not open {name}: {readable_error(exc)}", "danger")
            return {}
        self._say(f"opened {name}", "success")
        return results

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Release what the page holds: called when its browser session ends; calling it again does nothing.

        The runner stops a running computation and its worker thread ends
        (:meth:`pdcr_lab.widgets.ExplainRunner.close`); the loaded models and the results shown are
        dropped at once rather than at the next garbage collection.
        """
        if self._closed:
            return
        self._closed = True
        self.runner.close()
        self._models_cache.clear()
        self.current, self.current_image = {}, None

    # -- export -------------------------------------------------------------------------------
    def _name_exports(self) -> None:
        label = self.export_choice.value or "pdcr"
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(label))
        self.png_download.filename = f"{stem}.png"

    def figure(self, label: str | None = None):
        """The matplotlib figure of one current result (:func:`pdcr_lab.viz.overlay_figure`).

        Parameters
        ----------
        label : str, optional
            Which current result (default: the one chosen for export, else the first).
        """
        from ..viz import overlay_figure

        if not self.current:
            raise ValueError("there is no result to export yet: run an explanation or open a stored result")
        label = label or self.export_choice.value or next(iter(self.current))
        ds = self.current[label]
        return overlay_figure(ds, self.current_image, title=f"{label}  M0 = {float(ds.m0):.2f} {ds.attrs.get('units', '')}")

    def _png_bytes(self) -> io.BytesIO:
        import matplotlib.pyplot as plt

        try:
            fig = self.figure()
        except ValueError as exc:
            self._say(readable_error(exc), "warning")
            return io.BytesIO()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=200)
        plt.close(fig)
        buf.seek(0)
        return buf

    def _html_bytes(self) -> io.BytesIO:
        import panel as pn

        from ..viz import standalone_html

        if not self.current:
            self._say("there is no result to export yet", "warning")
            return io.BytesIO()
        body = [side_by_side(self.current)]
        if self.current_image is not None:
            body.append(side_by_side(self.current, image=self.current_image))
        page = pn.Column(*[pn.pane.HoloViews(b) for b in body],
                         *[pn.pane.HTML(statistics_html(ds, title=k)) for k, ds in self.current.items()])
        return io.BytesIO(standalone_html(page, "PdCR maps").encode())

    # -- layout -------------------------------------------------------------------------------
    def view(self) -> Any:
        """The whole page (a panel layout): controls and RoI picker on the left, results on the right."""
        import panel as pn

        # No pn.Tabs: bokeh plots updated inside a non-dynamic Tabs are laid out wrongly.
        stored = pn.Card(
            self.folder, self.folder_note, self.files, pn.Row(self.refresh_button, self.open_button),
            title="Stored results", collapsed=False, width=430,
        )
        controls = pn.Column(
            pn.pane.Markdown("## PdCR lab\nCausal explanation of segmentation models: **red** blocks support the "
                             "RoI (ATE < 0), **blue** blocks hurt it, white are irrelevant; the RoI is **green**.", width=420),
            pn.Row(self.dataset, self.image_select),
            self.models,
            pn.pane.Markdown("**Click the image to place the RoI** (or type it)"),
            self.picker.panel(),
            pn.Row(self.method, self.intervention),
            pn.Row(self.seed, self.tau),
            pn.Row(self.fine, self.coarse),
            self.run_button,
            self.runner.panel(),
            self.message,
            stored,
            width=430,
        )
        results = pn.Column(
            pn.pane.Markdown("### Effect maps (one shared colour scale)"),
            self.maps,
            self.details,
            pn.pane.Markdown("### Over the image"),
            self.overlays,
            pn.pane.Markdown("### Radial profiles"),
            self.profiles,
            pn.pane.Markdown("### Export"),
            pn.Row(self.export_choice, pn.Column(self.png_download, self.html_download)),
            width=VIEW_WIDTH,  # what every view inside is sized for: beside the controls in a 1280-px window
        )
        # A flex box: the results sit beside the controls on a wide page and below them where the
        # page (or a notebook's output area) is narrower than both.
        return pn.FlexBox(controls, results, flex_wrap="wrap", align_content="flex-start")


def create_app(results_dir: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """A fresh dashboard page (one per browser session).

    Outside a server (a notebook, a script) the dashboard is built at once. On a served page it is
    built when the browser has loaded the page (``pn.state.onload``), so that a bare request that
    never connects (a crawler, a port scan, a health check) costs a few kilobytes instead of a whole
    dashboard; and it is released (:meth:`Dashboard.close`) when the session ends
    (``pn.state.on_session_destroyed``), so that nothing of the page outlives it.

    Parameters
    ----------
    results_dir : str or os.PathLike, optional
        The results root (:class:`Dashboard`).
    **kwargs
        Further options of :class:`Dashboard` (``models=``, ``datasets=``, ``fine=``, ...).
    """
    import panel as pn

    if server_document() is None:
        return Dashboard(results_dir, **kwargs).view()
    page = pn.Column(pn.pane.Markdown("Loading the PdCR dashboard ...", width=420))
    built: list[Dashboard] = []  # the session's own dashboard: held by the page and its callbacks only

    def build() -> None:
        try:
            app = Dashboard(results_dir, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the visitor gets a message, not an empty page
            page.objects = [pn.pane.HTML(status_html(f"The dashboard could not start: {readable_error(exc)}", "danger"),
                                         width=420)]
            return
        built.append(app)
        page.objects = [app.view()]

    def release(session_context: Any) -> None:
        while built:
            built.pop().close()

    pn.state.onload(build)
    pn.state.on_session_destroyed(release)
    return page
