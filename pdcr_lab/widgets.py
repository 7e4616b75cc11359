"""Interactive helpers for notebooks and the dashboard (panel + holoviews, bokeh backend).

- :class:`RoiPicker`: show an image, click it to place a grid-aligned RoI (a bokeh ``Tap`` stream),
  or type the RoI; the current RoI is the ``roi`` parameter.
- :class:`ExplainRunner`: run :func:`pdcr_lab.explain` (or any explainer) in a worker thread with a
  progress bar fed by its ``progress`` callback, so the page and the kernel stay responsive; a
  failure becomes a readable message and the results already computed are kept.
- :func:`readable_error` and :func:`statistics_html`: the texts both interfaces show.

Example (in a notebook)::

    picker = RoiPicker(image, block=8)
    runner = ExplainRunner()
    pn.Column(picker.panel(), runner.panel())          # click the image to move the RoI
    runner.explain(model, image, roi=picker.roi, bank=bank, fine=5)
    ds = runner.wait()                                 # in a later cell: the effects dataset
"""

from __future__ import annotations

import html
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np
import param
import xarray as xr

from .checks import check_int
from .statistics import statistics
from .defaults import WORKING
from .rois import snap_roi
from .viz import as_display_image, holoviews_backend, image_plot, roi_outline, settings_caption

__all__ = ["snap_roi", "RoiPicker", "ExplainRunner", "readable_error", "statistics_html", "stats_values", "status_html",
           "TONES",
           "server_document"]


class RoiPicker(param.Parameterized):
    """An image you click to place the RoI; the RoI snaps to the block grid.

    Parameters
    ----------
    image : (C, H, W) or (H, W, C) array or tensor in [0, 1]
        The image shown.
    roi : (row, col, height, width), optional
        Initial RoI; default: centred.
    size : int
        Side of the RoI placed by a click, in pixels.
    block : int
        Grid the RoI corner snaps to.
    **params
        Further ``param`` parameters of the picker (e.g. ``name``).

    Examples
    --------
    >>> picker = RoiPicker(np.zeros((1, 48, 48)), size=16, block=8)
    >>> picker.roi                                   # centred on the grid
    (16, 16, 16, 16)
    >>> picker.click(x=40.0, y=3.0)                  # a click near the top-right corner
    (0, 32, 16, 16)
    """

    roi = param.NumericTuple(default=(0, 0, WORKING.roi_size, WORKING.roi_size), length=4,
                             doc="(row, col, height, width) in pixels")
    size = param.Integer(default=WORKING.roi_size, bounds=(1, None), doc="side of the RoI placed by a click")
    image = param.Parameter(default=None, doc="the image shown, (H, W) or (H, W, C) in [0, 1]")

    def __init__(self, image: Any, *, roi: tuple[int, int, int, int] | None = None, size: int = WORKING.roi_size, block: int = WORKING.block,
                 **params: Any) -> None:
        pixels = as_display_image(image)
        super().__init__(image=pixels, size=size, **params)
        self.block = check_int("block", block, minimum=1)
        h, w = pixels.shape[:2]
        self.roi = tuple(int(v) for v in roi) if roi is not None else snap_roi(w / 2, h / 2, size=size, block=block, shape=(h, w))
        self._tap = None
        self._view = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image shown."""
        return tuple(self.image.shape[:2])  # type: ignore[return-value]

    def set_image(self, image: Any) -> None:
        """Show another image; the RoI is kept when it still fits, else re-centred.

        Parameters
        ----------
        image : (C, H, W) or (H, W, C) array or tensor in [0, 1]
            The new image.
        """
        pixels = as_display_image(image)
        h, w = pixels.shape[:2]
        row, col, rh, rw = self.roi
        with param.parameterized.batch_call_watchers(self):
            self.image = pixels
            if row + rh > h or col + rw > w:
                self.roi = snap_roi(w / 2, h / 2, size=self.size, block=self.block, shape=(h, w))

    def click(self, x: float | None, y: float | None) -> tuple[int, int, int, int]:
        """What a click at column `x`, row `y` does: move the RoI there (ignored outside the image).

        Parameters
        ----------
        x : float or None
            Column of the click in pixel coordinates (None: no click).
        y : float or None
            Row of the click.

        Returns
        -------
        (row, col, height, width)
            The RoI after the click.
        """
        h, w = self.shape
        if x is None or y is None or not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
            return self.roi
        self.roi = snap_roi(x, y, size=self.size, block=self.block, shape=(h, w))
        return self.roi

    def plot(self) -> Any:
        """The clickable image with the RoI outline (``hv.DynamicMap`` overlay); clicks arrive via ``Tap``."""
        hv = holoviews_backend()
        if self._view is None:
            # Two maps, the Tap on the image's: holoviews attaches no Tap to a DynamicMap of an overlay.
            image = hv.DynamicMap(lambda image: image_plot(image, title="click to place the RoI"), streams=[hv.streams.Params(self, ["image"])])
            outline = hv.DynamicMap(roi_outline, streams=[hv.streams.Params(self, ["roi"], rename={"roi": "box"})])
            self._tap = hv.streams.Tap(source=image, x=None, y=None)
            self._tap.add_subscriber(lambda x, y: self.click(x, y))
            self._view = image * outline
        return self._view

    def panel(self) -> Any:
        """The image and a typed-RoI row (row, col, height, width) that stays in sync with clicks."""
        import panel as pn

        inputs = {
            name: pn.widgets.IntInput(label=name, value=int(v), start=0, width=70)
            for name, v in zip(("row", "col", "height", "width"), self.roi)
        }
        size = pn.widgets.IntInput.from_param(self.param.size, label="click size", width=80, step=self.block)
        syncing = threading.Lock()

        def typed(event: Any) -> None:
            if syncing.locked():
                return
            box = tuple(int(w.value) for w in inputs.values())
            self.roi = box

        def shown(event: Any) -> None:
            with syncing:
                for widget, v in zip(inputs.values(), event.new):
                    widget.value = int(v)

        for widget in inputs.values():
            widget.param.watch(typed, "value")
        self.param.watch(shown, "roi")
        return pn.Column(pn.pane.HoloViews(self.plot(), linked_axes=False), pn.Row(*inputs.values(), size))


def server_document() -> Any:
    """The bokeh document of the current served session, or None (notebook, script)."""
    try:
        import panel as pn
    except ImportError:  # pragma: no cover - panel is a dependency of this module's callers
        return None
    doc = pn.state.curdoc
    return doc if doc is not None and doc.session_context is not None else None


def _kernel_loop() -> Any:
    """The event loop of the Jupyter kernel running this code, or None (scripts, tests, servers)."""
    import asyncio

    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def readable_error(exc: BaseException) -> str:
    """One readable paragraph for a failed computation: what went wrong and what to try.

    Parameters
    ----------
    exc : BaseException
        The exception raised by the computation.

    Examples
    --------
    >>> readable_error(ValueError("block=5 does not tile the 96x96 image"))
    'Invalid input: block=5 does not tile the 96x96 image'
    >>> readable_error(RuntimeError("CUDA out of memory"))
    'Out of memory: CUDA out of memory. Try a smaller batch size, fewer draws, or the CPU.'
    """
    text = str(exc).strip() or type(exc).__name__
    if len(text) > 600:
        text = text[:597] + "..."
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or name == "OutOfMemoryError":
        return f"Out of memory: {text}. Try a smaller batch size, fewer draws, or the CPU."
    if text.lower().startswith("the model failed"):  # the engine's wrapping of a model error
        return text[0].upper() + text[1:]
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)):
        return f"Invalid input: {text}"
    if isinstance(exc, FileNotFoundError):
        return f"File not found: {text}"
    if isinstance(exc, RuntimeError):
        return f"The model failed: {text}"
    return f"{name}: {text}"


def stats_values(ds: xr.Dataset) -> dict[str, float]:
    """The numbers shown next to a map: M0, forwards, block counts (all non-zero effects, as in the
    paper, and those whose confidence interval excludes 0) and percentages, ATE range.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects of one map.

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> ds["ate"][0, 1] = -2.0
    >>> values = stats_values(ds)
    >>> values["support"], values["irrelevant"], values["ate_min"]
    (1, 3, -2.0)
    """
    st = statistics(ds)
    return {
        "m0": float(ds.m0),
        "forwards": int(ds.forwards),
        "support": int(st.neg),
        "harm": int(st.pos),
        "irrelevant": int(st.zero),
        "support_ci": int(st.neg_ci),
        "harm_ci": int(st.pos_ci),
        "support_pct": float(st.neg_pct),
        "harm_pct": float(st.pos_pct),
        "irrelevant_pct": float(st.zero_pct),
        "ate_min": float(ds.ate.min()),
        "ate_max": float(ds.ate.max()),
    }


_STAT_ROWS = (
    ("m0", "M0 (factual outcome)", "{:.3f}"),
    ("forwards", "forward passes", "{:d}"),
    ("support", "support blocks (ATE < 0)", "{:d}"),
    ("harm", "harm blocks (ATE > 0)", "{:d}"),
    ("irrelevant", "irrelevant blocks", "{:d}"),
    ("support_ci", "support, interval excludes 0", "{:d}"),
    ("harm_ci", "harm, interval excludes 0", "{:d}"),
    ("support_pct", "support %", "{:.2f}"),
    ("harm_pct", "harm %", "{:.2f}"),
    ("ate_min", "min ATE", "{:.4f}"),
    ("ate_max", "max ATE", "{:.4f}"),
)


def statistics_html(ds: xr.Dataset, title: str = "") -> str:
    """An HTML table of :func:`stats_values` with the map's settings under it; each value cell carries
    ``data-stat="<key>"``.

    The settings line (:func:`pdcr_lab.viz.settings_caption`: method, intervention, block, S, N,
    tau, outcome, seed, model, image, RoI) carries ``data-settings``; a map whose outcome is
    meaningless as it stands (``attrs["outcome_warning"]``, e.g. an RoI with nothing to segment)
    gets the warning above the table (``data-warning``), so that no view shows such a map silently.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects of one map.
    title : str
        Caption of the table (none when empty).

    Examples
    --------
    >>> text = statistics_html(pdcr_lab.schema.empty_effects(grid=(2, 2), block=4))
    >>> text.startswith('<div class="pdcr-stats">'), 'data-stat="forwards"' in text, "data-warning" in text
    (True, True, False)
    >>> "data-warning" in statistics_html(pdcr_lab.schema.empty_effects(grid=(2, 2), block=4, outcome_warning="M0 = 0"))
    True
    """
    values = stats_values(ds)
    units = html.escape(str(ds.attrs.get("units", "")))
    rows = "".join(
        f'<tr><th style="text-align:left;padding-right:1em">{label}</th>'
        f'<td data-stat="{key}" style="text-align:right">{fmt.format(values[key])}</td></tr>'
        for key, label, fmt in _STAT_ROWS
    )
    caption = f"<caption style='text-align:left'><b>{html.escape(title)}</b> (ATE in {units})</caption>" if title else ""
    warning = str(ds.attrs.get("outcome_warning", ""))
    shown = status_html(warning, "warning").replace('class="pdcr-status"', 'class="pdcr-status" data-warning', 1)
    settings = (f'<p data-settings style="font-size:85%;color:#555;max-width:320px;margin:4px 0">'
                f"{html.escape(settings_caption(ds))}</p>")
    return f'<div class="pdcr-stats">{shown}<table class="pdcr-stats">{caption}{rows}</table>{settings}</div>'


#: Background and text colours of a status line per tone (the Bootstrap alert palette).
TONES = {"danger": ("#f8d7da", "#842029"), "warning": ("#fff3cd", "#664d03"), "info": ("#cff4fc", "#055160"),
         "success": ("#d1e7dd", "#0f5132"), "secondary": ("#e2e3e5", "#41464b")}


def status_html(message: str, tone: str = "info") -> str:
    """A status line as HTML styled inline (a ``pn.pane.Alert`` whose colour changes in a notebook
    would fetch stylesheets from the internet); ``''`` for an empty message.

    Parameters
    ----------
    message : str
        Plain text (escaped).
    tone : {"danger", "warning", "info", "success", "secondary"}
        Its colours (:data:`TONES`).

    Examples
    --------
    >>> status_html("done", "success")[:54]
    '<div class="pdcr-status" data-tone="success" style="ba'
    """
    if tone not in TONES:
        raise ValueError(f"tone={tone!r} is not supported; expected one of {sorted(TONES)}")
    if not message:
        return ""
    background, colour = TONES[tone]
    return (f'<div class="pdcr-status" data-tone="{tone}" style="background:{background};color:{colour};'
            f'padding:8px 12px;border-radius:4px">{html.escape(message)}</div>')


class _Closed(Exception):
    """Raised into a computation whose runner was closed (its page went away)."""


_STOPPED = "the computation was stopped: its page was closed"
#: Seconds between two rounds of page updates while a notebook cell waits for a result.
_WAIT_STEP = 0.2


class ExplainRunner(param.Parameterized):
    """Runs explanations one at a time in a worker thread, with a progress bar and readable errors.

    Every finished result is appended to :attr:`results` (label -> dataset); a failure sets
    :attr:`error` and the message shown, and keeps earlier results. Callbacks registered with
    :meth:`on_result` receive ``(label, dataset)`` in the worker thread. :meth:`close` releases the
    runner when its page goes away.
    """

    running = param.Boolean(default=False, doc="a computation is in progress")
    done = param.Integer(default=0, doc="forward passes done in the current computation")
    total = param.Integer(default=0, doc="forward passes planned (grows when blocks survive screening)")
    message = param.String(default="ready", doc="what the runner is doing, or the last error")
    error = param.String(default="", doc="readable message of the last failure ('' after a success)")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.results: dict[str, xr.Dataset] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdcr-explain")
        self._future: Future | None = None
        self._callbacks: list[Callable[[str, xr.Dataset], None]] = []
        self._error_callbacks: list[Callable[[str, str], None]] = []
        self._widgets: tuple[Any, Any] | None = None
        self._doc: Any = None
        self._loop: Any = None
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self.traceback = ""

    # -- running ------------------------------------------------------------------------------
    def on_result(self, callback: Callable[[str, xr.Dataset], None]) -> None:
        """Call ``callback(label, ds)`` after every successful computation.

        Parameters
        ----------
        callback : callable(str, xarray.Dataset)
            Receives the result's label and dataset (where the page may be changed, see :meth:`in_ui`).
        """
        self._callbacks.append(callback)

    def on_error(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(label, message)`` after every failed computation.

        Parameters
        ----------
        callback : callable(str, str)
            Receives the label and the readable message (:func:`readable_error`).
        """
        self._error_callbacks.append(callback)

    def submit(self, fn: Callable[..., xr.Dataset], *args: Any, label: str = "result", **kwargs: Any) -> Future:
        """Run ``fn(*args, progress=..., **kwargs)`` in the worker thread; returns its Future.

        Refuses (``RuntimeError``) while another computation runs: one explanation at a time keeps
        the machine responsive and the progress bar meaningful.

        Parameters
        ----------
        fn : callable
            An explainer (or any function) that accepts a ``progress=callable(done, total)`` keyword
            and returns an effects dataset.
        *args
            Positional arguments of `fn`.
        label : str
            Key of the result in :attr:`results`.
        **kwargs
            Keyword arguments of `fn`.

        Examples
        --------
        >>> runner = ExplainRunner()
        >>> def slow_sum(a, b, progress):
        ...     progress(1, 1)
        ...     return pdcr_lab.schema.empty_effects(grid=(1, 1), block=a + b)
        >>> _ = runner.submit(slow_sum, 2, b=2, label="demo")
        >>> runner.wait().attrs["block"], list(runner.results), runner.percent
        (4, ['demo'], 100)
        """
        if self._closed:
            raise RuntimeError("this runner is closed (its page was closed); make a new one")
        if self.running:
            raise RuntimeError("a computation is already running; wait for it to finish")
        self._doc, self._loop = server_document(), _kernel_loop()
        self.param.update(running=True, done=0, total=0, error="", message=f"computing {label} ...")
        self._future = self._executor.submit(self._work, fn, args, kwargs, label)
        return self._future

    def explain(self, model: Any, image: Any, *, label: str = "result", **kwargs: Any) -> Future:
        """:func:`pdcr_lab.explain` in the worker thread (same arguments; `label` names the result).

        Parameters
        ----------
        model, image
            As in :func:`pdcr_lab.explain`.
        label : str
            Key of the result in :attr:`results`.
        **kwargs
            Further arguments of :func:`pdcr_lab.explain` (``roi=`` is required).
        """
        from .engine import explain

        return self.submit(explain, model, image, label=label, **kwargs)

    def in_ui(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` where the page may be changed.

        Widgets must not be changed from the worker thread: on a served page the change goes to the
        session's event loop (the next tick), in a notebook to the kernel's event loop (it runs as
        soon as no cell is busy); in a plain script or test it runs directly.

        Parameters
        ----------
        fn : callable
            What to run.
        *args
            Its arguments.
        """
        if self._closed:  # the page is gone: nothing left to update
            return
        if threading.current_thread() is threading.main_thread():
            fn(*args)
        elif self._doc is not None:
            try:
                self._doc.add_next_tick_callback(lambda: fn(*args))
            except Exception:  # noqa: BLE001 - the page was closed: nothing left to update
                pass
        elif self._loop is not None and not self._loop.is_closed():
            # Queued, and drained by the kernel's loop when it is free or by wait() when a cell
            # waits for the result (changes made while a cell runs reach the page reliably).
            self._pending.put((fn, args))
            self._loop.call_soon_threadsafe(self._drain)
        else:
            fn(*args)

    def _drain(self) -> None:
        while True:
            try:
                fn, args = self._pending.get_nowait()
            except queue.Empty:
                return
            fn(*args)

    def _progress(self, done: int, total: int) -> None:
        if self._closed:  # the page was closed: stop the computation at its next report
            raise _Closed(_STOPPED)
        # Only forward visible changes: the estimator reports after every batch.
        if total != self.total or int(100 * done / max(total, 1)) != int(100 * self.done / max(self.total, 1)) or done == total:
            self.param.update(done=int(done), total=int(total))

    def _work(self, fn: Callable[..., xr.Dataset], args: tuple, kwargs: dict, label: str) -> xr.Dataset | None:
        try:
            ds = fn(*args, progress=self._progress, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the user as a message
            if self._closed:  # stopped by close(): nobody is left to tell
                self.param.update(running=False, error=_STOPPED, message=_STOPPED)
                if not isinstance(exc, Exception):
                    raise
                return None
            text = readable_error(exc)
            self.param.update(running=False, error=text, message=f"{label} failed. {text}")
            self.traceback = traceback.format_exc()
            for callback in self._error_callbacks:
                self.in_ui(callback, label, text)
            if not isinstance(exc, Exception):
                raise
            return None
        if self._closed:  # finished after its page was closed: nobody is left to show it to
            self.param.update(running=False, error=_STOPPED, message=_STOPPED)
            return None
        self.results[label] = ds
        forwards = int(np.asarray(ds["forwards"]).sum()) if "forwards" in ds else 0
        self.param.update(running=False, done=self.total or self.done, message=f"{label} done: {forwards} forward passes")
        for callback in self._callbacks:
            self.in_ui(self._safely, callback, label, ds)
        return ds

    def _safely(self, callback: Callable[[str, xr.Dataset], None], label: str, ds: xr.Dataset) -> None:
        try:
            callback(label, ds)
        except Exception as exc:  # noqa: BLE001 - a display problem must not lose the result
            self.param.update(error=readable_error(exc), message=f"{label} computed, but showing it failed: {readable_error(exc)}")

    def wait(self, timeout: float | None = None) -> xr.Dataset:
        """Block until the current computation ends; return its dataset or raise with the message.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait (None: no limit).
        """
        if self._future is None:
            raise RuntimeError("nothing was submitted: call explain() or submit() first")
        if threading.current_thread() is threading.main_thread():
            ds = self._wait_showing_progress(timeout)
        else:
            ds = self._future.result(timeout)
        if ds is None:
            raise RuntimeError(self.error)
        return ds

    def _wait_showing_progress(self, timeout: float | None) -> xr.Dataset | None:
        """Wait in the kernel's main thread while applying the page changes the computation asks for.

        A notebook cell that waits blocks the kernel's event loop, which would otherwise apply the
        progress bar's updates; so the waiting cell applies them itself, a few times a second, and
        the bar moves while ``runner.wait()`` runs.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._drain()
            step = _WAIT_STEP if deadline is None else max(0.0, min(_WAIT_STEP, deadline - time.monotonic()))
            try:
                ds = self._future.result(step)
            except FutureTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                continue
            self._drain()  # the last changes (100 %, the message) before the cell goes on
            return ds

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the runner then accepts no more work)."""
        return self._closed

    def close(self) -> None:
        """Release the runner: called when its page (browser session) ends; calling it again does nothing.

        A running computation stops at its next progress report (the explainers report after every
        batch) and its result is neither kept nor shown; queued work is cancelled; the worker thread
        ends; the callbacks, the page's document, the widgets and the results are dropped, so that
        nothing of the page outlives it.
        """
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._callbacks.clear()
        self._error_callbacks.clear()
        self._doc = self._loop = self._widgets = None
        self.results = {}
        while True:
            try:
                self._pending.get_nowait()
            except queue.Empty:
                break

    # -- display ------------------------------------------------------------------------------
    @property
    def percent(self) -> int:
        """Progress of the current (or last) computation in percent."""
        return int(round(100 * self.done / self.total)) if self.total else 0

    @property
    def tone(self) -> str:
        """How the status line looks: ``danger`` (failed), ``info`` (running), ``success`` or ``secondary`` (idle)."""
        return "danger" if self.error else ("info" if self.running else "success" if self.results else "secondary")

    def panel(self) -> Any:
        """A progress bar and a status line that follow the computation (panel objects).

        The status line is a ``StaticText`` widget holding inline-styled HTML (:func:`status_html`):
        in a notebook, changing an ``Alert``'s colour or a pane's text resends links to panel's CDN
        stylesheets, which an offline page cannot load (:mod:`pdcr_lab.viz._offline`).
        """
        import panel as pn

        bar = pn.indicators.Progress(value=0, max=100, width=420, bar_color="primary", active=False)
        status = pn.widgets.StaticText(value="", width=420, margin=(5, 10))

        def refresh(*_: Any) -> None:
            finished = not self.running and not self.error and bool(self.results)  # a stored result reports no steps
            bar.value = 100 if finished else (self.percent if (self.running or self.total) else 0)
            bar.active = bool(self.running and not self.total)
            status.value = status_html(self.message, self.tone)

        self.param.watch(lambda *_: self.in_ui(refresh), ["done", "total", "running", "message", "error"])
        refresh()
        self._widgets = (bar, status)
        return pn.Column(bar, status)
