"""pdcr_lab.dashboard: the ``pdcr-lab serve`` app's objects, driven without a browser
(``tests/test_browser.py`` drives it in Chromium). Its figures are tested in test_viz.py, its widgets
in test_widgets.py."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
import weakref

import pytest

pytest.importorskip("holoviews")
pytest.importorskip("panel")

from pdcr_lab import load  # noqa: E402
from pdcr_lab.testing import FailingModel, assert_effects_equal  # noqa: E402


# -- the dashboard -----------------------------------------------------------------------------
@pytest.fixture
def dashboard(tmp_path, tiny96):
    from pdcr_lab.dashboard import Dashboard, ModelSource

    def load_model(name, dataset):
        if name == "broken":
            return FailingModel("the model exploded")
        return tiny96(1 if name == "tiny" else 4)

    source = ModelSource(names=lambda dataset: ["tiny", "tiny2", "broken"], load=load_model)
    app = Dashboard(tmp_path / "results", models=source, fine=3)
    app.view()
    return app


def test_dashboard_explains_saves_and_shows(dashboard):
    app = dashboard
    assert app.models.value == ["tiny"] and app.image_select.options
    app.models.value = ["tiny", "tiny2"]
    app.picker.roi = (40, 40, 16, 16)
    app.run()
    stacked = app.runner.wait()
    assert list(stacked.model.values) == ["tiny", "tiny2"]
    files = app.store.files()
    assert len(files) == 2 and app.files.options and not app.run_button.disabled
    for label in ("tiny", "tiny2"):
        stored = load(next(f for f in files if f.name.startswith(label + "_")))
        assert stored.attrs["model"] == label and stored.attrs["dataset"] == "lesions"
        assert_effects_equal(stored, app.current[label], variables=["ate"], rtol=0, atol=0)
    assert len(app.maps.object) == 2  # side by side
    html = app.details.objects[0].objects[0].object
    assert re.search(f'data-stat="forwards"[^>]*>{int(app.current["tiny"].forwards)}<', html)
    # Same settings again: loaded from the folder, not recomputed.
    before = {f: f.stat().st_mtime_ns for f in files}
    app.run()
    app.runner.wait()
    assert {f: f.stat().st_mtime_ns for f in app.store.files()} == before


def test_dashboard_says_when_an_roi_has_nothing_to_segment(dashboard):
    app = dashboard
    data = app.data
    target = data.masks("test")[app.image_select.value]
    assert not target[:16, :16].any()  # the corner holds no lesion
    app.picker.roi = (0, 0, 16, 16)
    with pytest.warns(Warning, match="nothing to segment|no foreground"):  # the computation's own OutcomeWarning
        app.run()
        app.runner.wait()
    assert app.status_kind == "warning" and "M0 = 0" in app.status and "boundary" in app.status
    assert "data-warning" in app.details.objects[0].objects[0].object
    app.picker.roi = (40, 40, 16, 16)  # on the lesion: no warning
    app.run()
    app.runner.wait()
    assert app.status_kind == "success" and "data-warning" not in app.details.objects[0].objects[0].object


def test_dashboard_failures_leave_the_page_usable(dashboard):
    app = dashboard
    app.picker.roi = (40, 40, 16, 16)
    app.run()
    app.runner.wait()
    kept = dict(app.current)
    app.models.value = ["broken"]
    app.run()
    with pytest.raises(RuntimeError, match="The model failed.*exploded"):
        app.runner.wait()
    assert app.status_kind == "danger" and "exploded" in app.message.value
    assert not app.run_button.disabled and app.current.keys() == kept.keys()
    app.models.value = ["tiny"]
    app.picker.roi = (88, 88, 16, 16)
    app.run()
    with pytest.raises(RuntimeError, match="out of bounds"):
        app.runner.wait()
    assert "Invalid input" in app.message.value
    app.models.value = []
    assert app.run() is None and "choose at least one model" in app.status


def test_dashboard_browses_and_exports(dashboard):
    app = dashboard
    app.picker.roi = (40, 40, 16, 16)
    app.run()
    app.runner.wait()
    name = app.files.options[0]
    results = app.open_file(name)
    assert list(results) == ["tiny"] and app.current_image is not None
    assert "opened" in app.status
    png = app._png_bytes().getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = app._html_bytes().getvalue().decode()
    assert "<html" in page.lower() and "M0 (factual outcome)" in page
    # Self-contained: no script or stylesheet is fetched from the internet (icons may be).
    assert not re.findall(r'<script[^>]+src="https?://', page)
    assert not re.findall(r'<link[^>]+rel="stylesheet"[^>]+href="https?://', page)
    assert app.open_file("missing.nc") == {} and "could not open missing.nc" in app.status
    app.folder.value = str(app.store.folder.parent / "elsewhere")
    assert app.files.options == []


def test_dashboard_without_models_says_so(tmp_path):
    from pdcr_lab.dashboard import Dashboard, ModelSource

    app = Dashboard(tmp_path, models=ModelSource(names=lambda d: [], load=lambda n, d: None))
    assert app.models.options == [] and "no trained model" in app.status


def test_serve_command_is_registered():
    from pdcr_lab.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "5999", "--no-show"])
    assert args.port == 5999 and args.show is False and args.func.__name__ == "_run_serve"
    assert build_parser().parse_args(["serve"]).show is True


# -- nothing exposed: localhost only, results confined to their root ---------------------------
def test_serve_binds_to_localhost_unless_told_otherwise(capsys):
    from pdcr_lab.cli import build_parser
    from pdcr_lab.dashboard import server_options

    args = build_parser().parse_args(["serve"])
    assert args.address == "127.0.0.1" and args.allow_websocket_origin == []
    local = server_options(5999)
    assert local["address"] == "127.0.0.1"
    assert set(local["websocket_origin"]) == {"localhost:5999", "127.0.0.1:5999"}
    assert capsys.readouterr().err == ""
    # Another address only when asked for, and never silently: the page has no authentication.
    args = build_parser().parse_args(["serve", "--address", "192.0.2.7", "--allow-websocket-origin", "lab.example:5999"])
    assert args.address == "192.0.2.7" and args.allow_websocket_origin == ["lab.example:5999"]
    exposed = server_options(5999, address="192.0.2.7", origins=["lab.example:5999"])
    assert exposed["address"] == "192.0.2.7"
    assert {"192.0.2.7:5999", "lab.example:5999"} <= set(exposed["websocket_origin"])
    warning = capsys.readouterr().err
    assert "192.0.2.7" in warning and "no authentication" in warning
    for loopback in ("localhost", "::1", "127.0.0.2"):
        server_options(5999, address=loopback)
        assert capsys.readouterr().err == ""


@pytest.fixture
def outside(tmp_path):
    """A results root ``tmp/results`` (with ``a/b`` in it) and a folder beside it holding ``secret.nc``."""
    from pdcr_lab import save
    from pdcr_lab.schema import empty_effects

    root = tmp_path / "results"
    (root / "a" / "b").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.mkdir()
    save(empty_effects(grid=(2, 2), block=4, model="secret"), secret / "secret.nc")
    return root, secret


def test_confine_refuses_paths_outside_the_root(outside, tmp_path):
    from pdcr_lab.dashboard import confine

    root, secret = outside
    real = root.resolve()
    # Inside: the root, nested folders (relative or absolute), `..` that stays inside, new folders.
    assert confine(root, root) == real and confine(root, "") == real
    assert confine(root, "a/b") == confine(root, root / "a" / "b") == real / "a" / "b"
    assert confine(root, "a/b/../b") == real / "a" / "b"
    assert confine(root, "a/new") == real / "a" / "new"
    (root / "inside").symlink_to(root / "a", target_is_directory=True)
    assert confine(root, "inside/b") == real / "a" / "b"  # a link that stays inside is fine
    # Outside: `..` escapes, absolute paths elsewhere, links that lead out (checked after resolving).
    (root / "out").symlink_to(secret, target_is_directory=True)
    (root / "a" / "leak.nc").symlink_to(secret / "secret.nc")
    for path in ("..", "../secret", "a/../../secret", root / ".." / "secret", secret, str(secret / "secret.nc"),
                 "/", tmp_path, "out", "out/secret.nc", root / "out" / "deeper", "a/leak.nc", "~"):
        with pytest.raises(ValueError, match="outside the results root"):
            confine(root, path)


def test_dashboard_results_folder_is_confined(dashboard, outside, tmp_path):
    root, secret = outside
    app = dashboard
    assert app.root == root.resolve() and app.folder.value == str(root.resolve())
    note = app.folder_note.object
    assert "confined" in note and str(root.resolve()) in note  # said next to the box
    (root / "out").symlink_to(secret, target_is_directory=True)
    (root / "leak.nc").symlink_to(secret / "secret.nc")
    app.refresh_files()
    assert app.files.options == []  # a link to a file outside is not listed
    for typed in (str(secret), str(root / ".." / "secret"), "../secret", "out", str(tmp_path / "new" / "folder")):
        app.folder.value = typed
        assert app.files.options == [], typed  # nothing listed ...
        assert app.status_kind == "danger" and "outside the results root" in app.status, typed
    for name in ("secret.nc", "leak.nc", "out/secret.nc", "../secret/secret.nc", str(secret / "secret.nc")):
        assert app.open_file(name) == {} and app.current == {}, name  # ... nothing opened ...
    app.picker.roi = (40, 40, 16, 16)
    app.folder.value = str(tmp_path / "new" / "folder")
    app.run()
    app.runner.wait()
    assert not (tmp_path / "new").exists()  # ... nothing created outside: the result stays in the root
    assert len(app.files.options) == 1 and (root / app.files.options[0]).is_file()  # the link is still not listed
    assert sorted(os.listdir(secret)) == ["secret.nc"]
    # Folders inside the root are browsed and written as before.
    app.folder.value = "a/b"
    assert app.store.folder == root.resolve() / "a" / "b" and app.status_kind != "danger"
    app.run()
    app.runner.wait()
    assert len(app.files.options) == 1 and list(app.open_file(app.files.options[0])) == ["tiny"]


# -- nothing leaked: a session's objects go when it ends -------------------------------------
def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, proc: subprocess.Popen | None = None, attempts: int = 1) -> bytes:
    """The page at `url`; with `attempts` > 1, retried while the server starts (a bounded loop)."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                return response.read()
        except (urllib.error.URLError, ConnectionError):
            if attempt == attempts - 1 or (proc is not None and proc.poll() is not None):
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def _until(condition, attempts: int = 600) -> bool:
    """Poll `condition` (a bounded loop, not a time limit)."""
    for _ in range(attempts):
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _tiny_source():
    from pdcr_lab.dashboard import ModelSource
    from pdcr_lab.testing import RandomConvNet

    return ModelSource(lambda dataset: ["tiny"], lambda name, dataset: RandomConvNet(hidden=4, kernel=5, seed=1, scale=0.5))


def test_served_session_releases_its_dashboard(tmp_path):
    """A browser session builds its dashboard when the page is ready and releases it when the
    session ends: the running computation stops, its worker thread ends, nothing keeps the app."""
    import panel as pn
    import torch
    from bokeh.events import DocumentReady

    from pdcr_lab.dashboard import Dashboard, ModelSource, create_app
    from pdcr_lab.testing import RandomConvNet

    blocked, gate, worker = threading.Event(), threading.Event(), []

    class Gated(torch.nn.Module):  # computes once, then waits at the gate: the session ends meanwhile
        def __init__(self):
            super().__init__()
            self.net, self.calls = RandomConvNet(hidden=4, kernel=5, seed=1, scale=0.5), 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:
                worker.append(threading.current_thread())
                blocked.set()
                gate.wait(120)  # a hang guard, not a time limit
            return self.net(x)

    docs = []

    def page():
        docs.append(pn.state.curdoc)
        return create_app(tmp_path / "results", models=ModelSource(lambda d: ["gated"], lambda n, d: Gated()), fine=3)

    def dashboards():  # the dashboards alive now, but for those of earlier tests
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some lazy modules warn when isinstance() touches them
            return [o for o in gc.get_objects() if isinstance(o, Dashboard) and o not in earlier]

    earlier = weakref.WeakSet()
    earlier.update(dashboards())

    port = _free_port()
    server = pn.serve({"/": page}, port=port, address="127.0.0.1", show=False, threaded=True,
                      check_unused_sessions_milliseconds=100, unused_session_lifetime_milliseconds=600_000)
    try:
        _get(f"http://127.0.0.1:{port}/", attempts=400)
        assert _until(lambda: bool(docs))
        doc = docs.pop()
        assert dashboards() == []  # a bare page request builds no dashboard
        doc.add_next_tick_callback(lambda: doc.callbacks.trigger_event(DocumentReady()))  # the browser is ready
        assert _until(lambda: bool(dashboards()))
        app = weakref.ref(dashboards()[0])
        doc.add_next_tick_callback(lambda: app().run())
        assert blocked.wait(120)
        runner, future = app().runner, app().runner._future
        # The session ends: bokeh discards it (as it does once no browser holds it).
        for session in doc.session_context.server_context.sessions:
            session.request_expiration()
        doc = session = None
        assert _until(lambda: runner.closed, attempts=2000)
        gate.set()
        assert future.result(120) is None  # stopped at its next progress report ...
        assert not list((tmp_path / "results").glob("*.nc"))  # ... and nothing was saved after the page went
        worker[0].join(120)  # a hang guard, not a time limit
        assert not worker[0].is_alive()  # the worker thread ended
        assert _until(lambda: gc.collect() >= 0 and app() is None)  # nothing keeps the dashboard
    finally:
        gate.set()
        server.stop()


SERVE = """
import sys
from pdcr_lab.dashboard import ModelSource, serve
from pdcr_lab.testing import RandomConvNet

source = ModelSource(lambda dataset: ["tiny"], lambda name, dataset: RandomConvNet(hidden=4, kernel=5, seed=1, scale=0.5))
serve(sys.argv[2], port=int(sys.argv[1]), show=False, models=source)
"""


@pytest.mark.slow
def test_served_page_memory_is_flat_over_page_loads(tmp_path):
    """``pdcr-lab serve``'s server (a subprocess on localhost, as the command configures it): its
    memory stays flat over repeated page loads, and it listens on the loopback address only."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    port = _free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(tmp_path / "results")], stdout=log,
                            stderr=subprocess.STDOUT, env=os.environ | {"MPLBACKEND": "Agg"})
    url = f"http://127.0.0.1:{port}/"
    try:
        _get(url, proc, attempts=2400)
        server = psutil.Process(proc.pid)
        listening = {c.laddr.ip for c in server.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}, listening
        for _ in range(10):  # warm-up: imports, caches, first allocations
            _get(url)
        before = server.memory_info().rss
        loads = 100
        for _ in range(loads):
            _get(url)
        per_load = (server.memory_info().rss - before) / loads / 2**20
        print(f"server memory: {per_load:+.3f} MB per page load over {loads} loads")
        assert per_load < 0.5, f"the server grew by {per_load:.2f} MB per page load over {loads} loads"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
