"""pdcr_lab.widgets: the notebook widgets (RoI picker, background runner, readable errors,
statistics panel), driven without a browser."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("holoviews")
pytest.importorskip("panel")

import holoviews as hv  # noqa: E402

from pdcr_lab.testing import FailingModel, assert_effects_equal  # noqa: E402
from pdcr_lab.widgets import ExplainRunner, RoiPicker, readable_error, snap_roi, stats_values, statistics_html  # noqa: E402


def test_snap_roi_centres_the_roi_on_the_grid():
    assert snap_roi(47.0, 47.0, size=16, block=8, shape=(96, 96)) == (40, 40, 16, 16)
    assert snap_roi(30.0, 40.0, size=16, block=8, shape=(96, 96)) == (32, 24, 16, 16)
    assert snap_roi(0.0, 95.0, size=16, block=8, shape=(96, 96)) == (80, 0, 16, 16)  # clipped inside
    with pytest.raises(ValueError, match="size=128 does not fit"):
        snap_roi(1, 1, size=128, block=8, shape=(96, 96))


def test_roi_picker_click_and_new_image():
    picker = RoiPicker(np.zeros((3, 96, 96)), block=8)
    assert picker.roi == (40, 40, 16, 16)
    assert picker.click(30.0, 40.0) == (32, 24, 16, 16)
    assert picker.click(500.0, 10.0) == (32, 24, 16, 16)  # outside the image: ignored
    assert picker.click(None, None) == (32, 24, 16, 16)
    picker.set_image(np.zeros((1, 48, 48)))
    assert picker.roi == (32, 24, 16, 16) and picker.shape == (48, 48)
    picker.roi = (40, 40, 8, 8)
    picker.set_image(np.zeros((1, 32, 32)))
    assert picker.roi == (8, 8, 16, 16)  # no longer fits: re-centred
    view = picker.panel()
    plot = hv.render(picker.plot(), backend="bokeh")
    assert "tap" in plot.subscribed_events  # clicks reach the server
    assert view is not None


def test_readable_errors_say_what_to_do():
    assert readable_error(ValueError("roi=(1, 2) is bad")) == "Invalid input: roi=(1, 2) is bad"
    assert readable_error(RuntimeError("CUDA out of memory. Tried")).startswith("Out of memory: ")
    assert "smaller batch size" in readable_error(MemoryError())
    assert readable_error(RuntimeError("shape mismatch")) == "The model failed: shape mismatch"
    assert readable_error(ValueError("the model failed on the image: x")) == "The model failed on the image: x"
    assert readable_error(FileNotFoundError("no checkpoint")) == "File not found: no checkpoint"


def test_runner_keeps_results_and_reports_failures(lesion_maps, lesions, tiny96):
    image, a, _ = lesion_maps
    seen = []
    runner = ExplainRunner()
    view = runner.panel()
    runner.on_result(lambda label, ds: seen.append(label))
    runner.explain(tiny96(1), image, roi=(40, 40, 16, 16), target=lesions.masks("test")[0], bank=lesions.bank, fine=4, intervention="zero", label="first")
    ds = runner.wait()
    assert_effects_equal(ds, a, variables=["ate"], rtol=0, atol=0)
    assert seen == ["first"] and runner.total > 0 and runner.percent == 100 and not runner.running
    bar, status = view
    assert bar.value == 100 and runner.tone == "success" and 'data-tone="success"' in status.value

    runner.explain(tiny96(1), image, roi=(90, 90, 16, 16), bank=lesions.bank, label="bad roi")
    with pytest.raises(RuntimeError, match="out of bounds"):
        runner.wait()
    assert runner.error.startswith("Invalid input: roi=(90, 90, 16, 16)")
    assert runner.tone == "danger" and 'data-tone="danger"' in status.value and "out of bounds" in status.value
    runner.explain(FailingModel("the model exploded"), image, roi=(40, 40, 16, 16), bank=lesions.bank, label="broken")
    with pytest.raises(RuntimeError, match="the model exploded"):
        runner.wait()
    assert list(runner.results) == ["first"]  # nothing computed is lost
    assert not runner.running


def test_statistics_html_shows_the_stored_numbers(lesion_maps):
    _, a, _ = lesion_maps
    text = statistics_html(a, title="unet")
    values = stats_values(a)
    shown = dict(re.findall(r'data-stat="(\w+)"[^>]*>([^<]*)<', text))
    assert shown["support"] == str(values["support"]) and shown["m0"] == f'{values["m0"]:.3f}'
    assert set(shown) <= set(values)
    assert values["support"] + values["harm"] + values["irrelevant"] == 144 - int(a.roi_block.sum())


def test_runner_close_stops_the_computation_and_its_thread():
    """A closed runner (its page was closed) stops a running computation at its next progress
    report, accepts no more work, lets its worker thread end and drops the page it updated."""
    import threading

    from pdcr_lab.schema import empty_effects

    started, go = threading.Event(), threading.Event()
    steps, shown, worker = [], [], []

    def slow(progress, total=1000):
        worker.append(threading.current_thread())
        started.set()
        go.wait(60)  # a hang guard, not a time limit
        for i in range(total):
            progress(i + 1, total)
            steps.append(i)
        return empty_effects(grid=(1, 1), block=4)

    runner = ExplainRunner()
    runner.on_result(lambda label, ds: shown.append(label))
    future = runner.submit(slow, label="slow")
    try:
        assert started.wait(60)
        runner.close()
    finally:
        go.set()
    assert future.result(60) is None and len(steps) < 1000  # stopped early, nothing kept
    with pytest.raises(RuntimeError, match="stopped: its page was closed"):
        runner.wait()
    assert shown == [] and runner.results == {} and not runner.running and runner.closed
    with pytest.raises(RuntimeError, match="closed"):
        runner.submit(slow, label="again")
    worker[0].join(60)  # a hang guard, not a time limit
    assert not worker[0].is_alive()
    runner.close()  # closing twice is harmless


def test_wait_shows_progress_while_the_cell_waits(monkeypatch):
    """In a notebook, a cell blocked in runner.wait() holds the kernel's event loop, which would apply
    the progress bar's updates: wait() applies them itself, so the bar moves before the result is in."""
    import threading

    from pdcr_lab import widgets
    from pdcr_lab.schema import empty_effects

    class KernelLoop:  # a kernel's loop that never runs while the cell waits (it is blocked)
        def is_closed(self):
            return False

        def call_soon_threadsafe(self, fn):
            pass

    monkeypatch.setattr(widgets, "_kernel_loop", lambda: KernelLoop())
    shown, seen_while_running = [], threading.Event()

    def slow(progress):
        progress(1, 4)
        seen = seen_while_running.wait(60)  # a hang guard, not a time limit
        progress(4, 4)
        return empty_effects(grid=(1, 1), block=4).assign_attrs(progress_seen_while_running=int(seen))

    runner = ExplainRunner()
    bar = runner.panel()[0]

    def record(*_):
        shown.append(runner.percent)
        if runner.running and runner.percent == 25:
            seen_while_running.set()

    bar.param.watch(record, "value")
    runner.submit(slow, label="slow")
    ds = runner.wait()
    assert ds.attrs["progress_seen_while_running"] == 1, "the bar did not move while wait() was waiting"
    assert 25 in shown and bar.value == 100
